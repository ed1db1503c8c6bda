/* The dataplane's compiled fast path for the packets of established flows.
 *
 * Why: a forwarded packet costs the Python engine about 5 us and the dataplane about 16 us of
 * CPU in all; 64-byte UDP through natsim reached a third of the kernel's own forwarding rate.
 * This module receives frames, and forwards those of *hot* flows (flows the Python side
 * installed, see simulator/fastpath.py) itself: the NAT rewrite with the same RFC 1624
 * updates, in the same order, as simulator/core/packets.py, and the same accounting as
 * Middlebox._track (last seen, the next sequence number, packets and octets, the data-event
 * clock), kept here until the Python side takes it (FastPath.take) before the engine reads
 * the flow again.
 *
 * It decides nothing the engine has not decided: any frame it is not sure of (a TCP segment
 * with SYN, FIN or RST, a possible keepalive probe, a data event due, a timer due, anything
 * that is not plain IPv4 TCP/UDP, a flow it does not hold) is handed back to Python, whole
 * and untouched, in the order it arrived. The engine stays the authority; this is a cache of
 * its decisions for one kind of packet.
 *
 * No Python object is created per forwarded frame.
 */

#include "_fastpath.h"

static PyObject *FastPath_drain(FastPath *self, PyObject *args)
{
    int fd, budget;
    Py_buffer buf;
    double deadline;
    if (!PyArg_ParseTuple(args, "iw*id", &fd, &buf, &budget, &deadline))
        return NULL;
    long result = BUDGET_SPENT;
    for (int i = 0; i < budget; i++) {
        ssize_t n = recv(fd, buf.buf, (size_t)buf.len, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                result = DRAINED;
                break;
            }
            if (errno == EINTR) {
                result = BUDGET_SPENT; /* back to Python: its signal handlers run */
                break;
            }
            PyBuffer_Release(&buf);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        int done = fp_forward(self, (uint8_t *)buf.buf, n, deadline);
        if (done == 0) {
            result = (long)n;
            break;
        }
        self->forwarded++;
        if (done < 0) {
            result = SEND_FAILED;
            break;
        }
    }
    PyBuffer_Release(&buf);
    return PyLong_FromLong(result);
}

static PyObject *FastPath_offer(FastPath *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t n;
    double deadline;
    if (!PyArg_ParseTuple(args, "w*nd", &buf, &n, &deadline))
        return NULL;
    if (n < 0 || n > buf.len) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "frame length outside the buffer");
        return NULL;
    }
    int done = fp_forward(self, (uint8_t *)buf.buf, n, deadline);
    PyBuffer_Release(&buf);
    if (done != 0)
        self->forwarded++;
    return PyLong_FromLong(done < 0 ? SEND_FAILED : done);
}

static int check_key(Py_buffer *key)
{
    if (key->len != KEY_LEN) {
        PyErr_Format(PyExc_ValueError, "a key is %d bytes, not %zd", KEY_LEN, key->len);
        return -1;
    }
    return 0;
}

static PyObject *FastPath_add(FastPath *self, PyObject *args)
{
    Py_buffer key, final;
    PyObject *flow;
    int dir, flags, port, step0, step1;
    unsigned long next_seq;
    double last_seen, data_event;
    if (!PyArg_ParseTuple(args, "y*Oiiiiiy*kdd", &key, &flow, &dir, &flags, &port, &step0,
                          &step1, &final, &next_seq, &last_seen, &data_event))
        return NULL;
    PyObject *result = NULL;
    if (check_key(&key) < 0)
        goto out;
    if (final.len != 12 || port < 0 || port >= self->nports || dir < 0 || dir > 1) {
        PyErr_SetString(PyExc_ValueError, "bad rewrite, port or direction");
        goto out;
    }
    if (fp_find(self, key.buf) != NULL) {
        PyErr_SetString(PyExc_KeyError, "key already held");
        goto out;
    }
    if ((self->used + self->tombs + 1) * 2 > self->cap
        && fp_resize(self, self->used * 4 > self->cap ? self->cap * 2 : self->cap) < 0)
        goto out;
    Entry *e = fp_slot_for(self->table, self->cap, key.buf);
    if (e->used == 2)
        self->tombs--;
    memset(e, 0, sizeof(*e));
    memcpy(e->key, key.buf, KEY_LEN);
    e->used = 1;
    e->dir = (uint8_t)dir;
    e->flags = (uint8_t)flags;
    e->port = (uint8_t)port;
    e->steps[0] = (uint8_t)step0;
    e->steps[1] = (uint8_t)step1;
    memcpy(e->final, final.buf, 12);
    e->next_seq = (uint32_t)next_seq;
    e->last_seen = last_seen;
    e->data_event = data_event;
    Py_INCREF(flow);
    e->flow = flow;
    self->used++;
    result = Py_NewRef(Py_None);
out:
    PyBuffer_Release(&key);
    PyBuffer_Release(&final);
    return result;
}

static PyObject *FastPath_remove(FastPath *self, PyObject *args)
{
    Py_buffer key;
    if (!PyArg_ParseTuple(args, "y*", &key))
        return NULL;
    if (check_key(&key) < 0) {
        PyBuffer_Release(&key);
        return NULL;
    }
    Entry *e = fp_find(self, key.buf);
    PyBuffer_Release(&key);
    if (e == NULL)
        Py_RETURN_FALSE;
    if (e->dirty) {
        PyErr_SetString(PyExc_RuntimeError, "an entry with accounting not taken yet");
        return NULL;
    }
    Py_CLEAR(e->flow);
    e->used = 2;
    self->used--;
    self->tombs++;
    Py_RETURN_TRUE;
}

static PyObject *FastPath_take(FastPath *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *list = PyList_New((Py_ssize_t)self->ndirty);
    if (list == NULL)
        return NULL;
    for (size_t i = 0; i < self->ndirty; i++) {
        Entry *e = &self->table[self->dirty[i]];
        PyObject *seq = (e->flags & E_SEQ_KNOWN) ? PyLong_FromUnsignedLong(e->next_seq)
                                                 : Py_NewRef(Py_None);
        PyObject *item = seq == NULL ? NULL : Py_BuildValue(
            "(OiNddKK)", e->flow, (int)e->dir, seq, e->last_seen, e->data_event,
            (unsigned long long)e->packets, (unsigned long long)e->octets);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    for (size_t i = 0; i < self->ndirty; i++) {
        Entry *e = &self->table[self->dirty[i]];
        e->packets = e->octets = 0;
        e->dirty = 0;
    }
    self->ndirty = 0;
    PyObject *counters = PyTuple_New(C_COUNT);
    if (counters == NULL) {
        Py_DECREF(list);
        return NULL;
    }
    for (int i = 0; i < C_COUNT; i++) {
        PyTuple_SET_ITEM(counters, i, PyLong_FromUnsignedLongLong(self->counters[i]));
        self->counters[i] = 0;
    }
    return Py_BuildValue("(NN)", list, counters);
}

static PyObject *FastPath_set_port(FastPath *self, PyObject *args)
{
    int index, fd;
    Py_buffer header;
    if (!PyArg_ParseTuple(args, "iiy*", &index, &fd, &header))
        return NULL;
    if (index < 0 || index >= MAX_PORTS || header.len != ETH_HLEN || index > self->nports) {
        PyBuffer_Release(&header);
        PyErr_SetString(PyExc_ValueError, "bad port index or Ethernet header");
        return NULL;
    }
    self->port_fd[index] = fd;
    memcpy(self->port_header[index], header.buf, ETH_HLEN);
    if (index == self->nports)
        self->nports++;
    PyBuffer_Release(&header);
    Py_RETURN_NONE;
}

static PyObject *FastPath_last_errno(FastPath *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(self->last_errno);
}

static PyObject *FastPath_pin(FastPath *self, PyObject *arg)
{
    if (arg == Py_None) {
        self->pinned = 0;
        Py_RETURN_NONE;
    }
    double t = PyFloat_AsDouble(arg);
    if (t == -1.0 && PyErr_Occurred())
        return NULL;
    self->pinned = 1;
    self->pinned_at = t;
    Py_RETURN_NONE;
}

static PyObject *FastPath_forwarded(FastPath *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLongLong(self->forwarded);
}

static Py_ssize_t FastPath_len(FastPath *self) { return (Py_ssize_t)self->used; }

static int FastPath_init(FastPath *self, PyObject *args, PyObject *kwds)
{
    static char *names[] = {"origin", "speed", "data_event_gap", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ddd", names, &self->origin, &self->speed,
                                     &self->data_event_gap))
        return -1;
    if (self->table == NULL && fp_resize(self, 64) < 0)
        return -1;
    return 0;
}

static void FastPath_dealloc(FastPath *self)
{
    for (size_t i = 0; self->table != NULL && i < self->cap; i++)
        if (self->table[i].used == 1)
            Py_CLEAR(self->table[i].flow);
    PyMem_Free(self->table);
    PyMem_Free(self->dirty);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef FastPath_methods[] = {
    {"drain", (PyCFunction)FastPath_drain, METH_VARARGS,
     "drain(fd, buffer, budget, deadline): receive and forward frames of held flows; "
     "returns the length of a frame left in buffer for the engine, or DRAINED, "
     "BUDGET_SPENT, SEND_FAILED"},
    {"offer", (PyCFunction)FastPath_offer, METH_VARARGS,
     "offer(buffer, n, deadline): the frame already in buffer[:n], as drain() would take "
     "it: 1 forwarded, 0 left for the engine (untouched), SEND_FAILED"},
    {"add", (PyCFunction)FastPath_add, METH_VARARGS,
     "add(key, flow, direction, flags, port, step0, step1, final, next_seq, last_seen, "
     "data_event)"},
    {"remove", (PyCFunction)FastPath_remove, METH_VARARGS, "remove(key) -> held before"},
    {"take", (PyCFunction)FastPath_take, METH_NOARGS,
     "take() -> ([(flow, direction, next_seq, last_seen, data_event, packets, octets)], "
     "counters): the accounting since the last take, then zeroed"},
    {"set_port", (PyCFunction)FastPath_set_port, METH_VARARGS,
     "set_port(index, fd, ethernet_header)"},
    {"pin", (PyCFunction)FastPath_pin, METH_O,
     "pin(t): model time fixed at t instead of the compressed wall clock (None: the clock "
     "again); for tests that compare the fast path with the engine step by step"},
    {"forwarded", (PyCFunction)FastPath_forwarded, METH_NOARGS,
     "frames forwarded here since the start"},
    {"last_errno", (PyCFunction)FastPath_last_errno, METH_NOARGS,
     "the errno of the last send that failed"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods FastPath_as_sequence = {
    .sq_length = (lenfunc)FastPath_len,
};

static PyTypeObject FastPathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "simulator._fastpath.FastPath",
    .tp_basicsize = sizeof(FastPath),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Forwarding of the packets of established flows, on the engine's behalf.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FastPath_init,
    .tp_dealloc = (destructor)FastPath_dealloc,
    .tp_methods = FastPath_methods,
    .tp_as_sequence = &FastPath_as_sequence,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_fastpath",
    .m_doc = "The dataplane's compiled fast path (see simulator/fastpath.py).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    if (PyType_Ready(&FastPathType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "FastPath", (PyObject *)&FastPathType) < 0
        || PyModule_AddIntConstant(m, "DRAINED", DRAINED) < 0
        || PyModule_AddIntConstant(m, "BUDGET_SPENT", BUDGET_SPENT) < 0
        || PyModule_AddIntConstant(m, "SEND_FAILED", SEND_FAILED) < 0
        || PyModule_AddIntConstant(m, "STEP_NONE", STEP_NONE) < 0
        || PyModule_AddIntConstant(m, "STEP_SRC", STEP_SRC) < 0
        || PyModule_AddIntConstant(m, "STEP_DST", STEP_DST) < 0
        || PyModule_AddIntConstant(m, "TCP", E_TCP) < 0
        || PyModule_AddIntConstant(m, "REFRESH_EMPTY", E_REFRESH_EMPTY) < 0
        || PyModule_AddIntConstant(m, "SEQ_KNOWN", E_SEQ_KNOWN) < 0
        || PyModule_AddIntConstant(m, "KEY_LEN", KEY_LEN) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
