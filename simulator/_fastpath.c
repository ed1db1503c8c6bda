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
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define KEY_LEN 13
#define VNET_LEN 10
#define ETH_HLEN 14
#define IP_START (VNET_LEN + ETH_HLEN)
#define MAX_PORTS 64
#define F_NEEDS_CSUM 1

/* flags of an entry */
#define E_TCP 1
#define E_REFRESH_EMPTY 2 /* a segment without payload refreshes the idle timer */
#define E_SEQ_KNOWN 4

/* the rewrite steps of a direction, applied in order, as the engine applies them */
#define STEP_NONE 0
#define STEP_SRC 1
#define STEP_DST 2

/* drain()'s results besides a frame's length */
#define DRAINED (-1)
#define BUDGET_SPENT (-2)
#define SEND_FAILED (-3)

/* counter indices */
enum { C_PK_IN_SRC, C_BY_IN_SRC, C_PK_OUT_DST, C_BY_OUT_DST,
       C_PK_IN_DST, C_BY_IN_DST, C_PK_OUT_SRC, C_BY_OUT_SRC, C_TX_FULL, C_COUNT };

typedef struct {
    uint8_t key[KEY_LEN];
    uint8_t used;       /* 0 empty, 1 used, 2 deleted */
    uint8_t dir;        /* 0 inside -> outside, 1 the reverse */
    uint8_t flags;
    uint8_t port;       /* index into the output ports */
    uint8_t steps[2];
    uint8_t final[12];  /* source address, destination address, source port, destination port */
    uint32_t next_seq;
    uint32_t dirty;     /* position in the dirty list plus one; 0: clean */
    double last_seen;
    double data_event;
    uint64_t packets;
    uint64_t octets;
    PyObject *flow;
} Entry;

typedef struct {
    PyObject_HEAD
    Entry *table;
    size_t cap;         /* a power of two */
    size_t used;
    size_t tombs;
    uint32_t *dirty;
    size_t ndirty;
    size_t dirty_cap;
    double origin;
    double speed;
    double data_event_gap;
    int port_fd[MAX_PORTS];
    uint8_t port_header[MAX_PORTS][ETH_HLEN];
    int nports;
    uint64_t counters[C_COUNT];
    uint64_t forwarded;
    int last_errno;
    int pinned;         /* model time fixed at pinned_at (the tests' clock) */
    double pinned_at;
} FastPath;

static inline uint64_t hash_key(const uint8_t *k)
{
    uint64_t a, b;
    memcpy(&a, k, 8);
    uint32_t c;
    memcpy(&c, k + 8, 4);
    b = ((uint64_t)c << 8) | k[12];
    uint64_t h = (a ^ (b * 0x9E3779B97F4A7C15ULL)) * 0xFF51AFD7ED558CCDULL;
    return h ^ (h >> 31);
}

static Entry *find(FastPath *self, const uint8_t *key)
{
    size_t mask = self->cap - 1;
    size_t i = hash_key(key) & mask;
    for (;;) {
        Entry *e = &self->table[i];
        if (e->used == 0)
            return NULL;
        if (e->used == 1 && memcmp(e->key, key, KEY_LEN) == 0)
            return e;
        i = (i + 1) & mask;
    }
}

static Entry *slot_for(Entry *table, size_t cap, const uint8_t *key)
{
    size_t mask = cap - 1;
    size_t i = hash_key(key) & mask;
    while (table[i].used == 1)
        i = (i + 1) & mask;
    return &table[i];
}

static void rebuild_dirty(FastPath *self)
{
    self->ndirty = 0;
    for (size_t i = 0; i < self->cap; i++) {
        Entry *e = &self->table[i];
        if (e->used == 1 && e->dirty) {
            self->dirty[self->ndirty] = (uint32_t)i;
            e->dirty = (uint32_t)++self->ndirty;
        }
    }
}

static int resize(FastPath *self, size_t cap)
{
    Entry *table = PyMem_Calloc(cap, sizeof(Entry));
    uint32_t *dirty = PyMem_Calloc(cap, sizeof(uint32_t));
    if (table == NULL || dirty == NULL) {
        PyMem_Free(table);
        PyMem_Free(dirty);
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < self->cap; i++) {
        Entry *e = &self->table[i];
        if (e->used == 1)
            *slot_for(table, cap, e->key) = *e;
    }
    PyMem_Free(self->table);
    PyMem_Free(self->dirty);
    self->table = table;
    self->dirty = dirty;
    self->dirty_cap = cap;
    self->cap = cap;
    self->tombs = 0;
    rebuild_dirty(self);
    return 0;
}

/* RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), word by word with end-around carry, as the RFC
 * writes it (and as tests/unit/test_packets.py checks packets.py's arithmetic against). */
static inline uint16_t replaced(uint16_t checksum, const uint8_t *old, const uint8_t *new_,
                                int words)
{
    uint32_t total = (uint16_t)~checksum;
    for (int i = 0; i < words; i++) {
        uint16_t m = (uint16_t)(old[2 * i] << 8 | old[2 * i + 1]);
        uint16_t n = (uint16_t)(new_[2 * i] << 8 | new_[2 * i + 1]);
        total += (uint16_t)~m + (uint32_t)n;
    }
    while (total >> 16)
        total = (total & 0xFFFF) + (total >> 16);
    return (uint16_t)~total;
}

static inline uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* packets.py's _rewrite: one address and its port, the IP checksum by the address, the
 * TCP/UDP one by address and port (a UDP checksum of zero stays zero, and never becomes
 * zero). ``source``: the source pair, else the destination pair. */
static void rewrite(uint8_t *ip, int l4, int tcp, int source, const uint8_t *new_ip,
                    const uint8_t *new_port)
{
    uint8_t *addr = ip + (source ? 12 : 16);
    uint8_t *port = ip + l4 + (source ? 0 : 2);
    uint8_t old[6], now[6];
    memcpy(old, addr, 4);
    memcpy(old + 4, port, 2);
    memcpy(now, new_ip, 4);
    memcpy(now + 4, new_port, 2);
    memcpy(addr, new_ip, 4);
    put16(ip + 10, replaced(get16(ip + 10), old, now, 2));
    memcpy(port, new_port, 2);
    uint8_t *csum = ip + l4 + (tcp ? 16 : 6);
    uint16_t l4_csum = get16(csum);
    if (!tcp && l4_csum == 0)
        return;
    uint16_t updated = replaced(l4_csum, old, now, 3);
    if (!tcp && updated == 0)
        updated = 0xFFFF;
    put16(csum, updated);
}

static void mark_dirty(FastPath *self, Entry *e)
{
    if (e->dirty)
        return;
    self->dirty[self->ndirty] = (uint32_t)(e - self->table);
    e->dirty = (uint32_t)++self->ndirty;
}

static inline double model_now(FastPath *self)
{
    if (self->pinned)
        return self->pinned_at;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ((double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 - self->origin) * self->speed;
}

/* One frame: forwarded here (1), or left for the engine untouched (0), or forwarded and its
 * send failed with an error that is not a full queue (-1, errno in last_errno). */
static int forward(FastPath *self, uint8_t *frame, Py_ssize_t n, double deadline)
{
    if (n < IP_START + 20 || frame[IP_START - 2] != 0x08 || frame[IP_START - 1] != 0x00)
        return 0;
    uint8_t *ip = frame + IP_START;
    Py_ssize_t len = n - IP_START;
    uint8_t ver_ihl = ip[0];
    if (ver_ihl >> 4 != 4)
        return 0;
    int ihl = (ver_ihl & 0x0F) * 4;
    int total_len = get16(ip + 2);
    if (ihl < 20 || total_len < ihl || len < total_len || (get16(ip + 6) & 0x3FFF))
        return 0;
    int proto = ip[9];
    int tcp = proto == 6;
    int payload;
    uint8_t tflags = 0;
    if (tcp) {
        if (total_len < ihl + 20)
            return 0;
        int doff = (ip[ihl + 12] >> 4) * 4;
        if (doff < 20 || total_len < ihl + doff)
            return 0;
        tflags = ip[ihl + 13];
        if (tflags & 0x07) /* FIN, SYN, RST: the state table's business */
            return 0;
        payload = total_len - ihl - doff;
    } else if (proto == 17) {
        if (total_len < ihl + 8)
            return 0;
        payload = total_len - ihl - 8;
    } else {
        return 0;
    }
    uint8_t key[KEY_LEN];
    key[0] = (uint8_t)proto;
    memcpy(key + 1, ip + 12, 4);
    memcpy(key + 5, ip + ihl, 2);
    memcpy(key + 7, ip + 16, 4);
    memcpy(key + 11, ip + ihl + 2, 2);
    Entry *e = find(self, key);
    if (e == NULL)
        return 0;
    double now = model_now(self);
    if (now >= deadline) /* a timer is due: the engine expires before it handles a packet */
        return 0;
    uint32_t seq = 0;
    if (tcp) {
        seq = get32(ip + ihl + 4);
        if ((e->flags & E_SEQ_KNOWN) && payload <= 1 && seq == e->next_seq - 1)
            return 0; /* a keepalive probe: reported by the engine */
    }
    if (payload > 0 && !(now - e->data_event < self->data_event_gap))
        return 0; /* a data event is due */
    int at = -1;
    uint8_t partial[2] = {0, 0}, old_addrs[8];
    if (frame[0] & F_NEEDS_CSUM) {
        /* struct virtio_net_hdr, little-endian: csum_start (bytes 6-7) counts from the Ethernet
         * header, csum_offset (8-9) from there (dataplane._partial_checksum_at) */
        at = (int)(frame[6] | frame[7] << 8) - ETH_HLEN + (int)(frame[8] | frame[9] << 8);
        if (!(at >= ihl && at % 2 == 0 && at + 2 <= len))
            return 0; /* refused by the engine's path, with its reason */
        memcpy(partial, ip + at, 2);
        memcpy(old_addrs, ip + 12, 8);
    }

    /* Middlebox._track, for a packet the engine would only account for */
    if (!tcp || payload > 0 || (e->flags & E_REFRESH_EMPTY)) {
        if (now > e->last_seen)
            e->last_seen = now;
    }
    e->packets += 1;
    e->octets += (uint64_t)total_len;
    if (payload > 0)
        e->data_event = now;
    if (tcp) {
        uint32_t end = seq + (uint32_t)payload;
        if (!(e->flags & E_SEQ_KNOWN) || (uint32_t)(end - e->next_seq) < 0x80000000u) {
            e->next_seq = end;
            e->flags |= E_SEQ_KNOWN;
        }
    }
    mark_dirty(self, e);
    if (e->dir == 0) {
        self->counters[C_PK_IN_SRC] += 1;
        self->counters[C_BY_IN_SRC] += (uint64_t)total_len;
        self->counters[C_PK_OUT_DST] += 1;
        self->counters[C_BY_OUT_DST] += (uint64_t)total_len;
    } else {
        self->counters[C_PK_IN_DST] += 1;
        self->counters[C_BY_IN_DST] += (uint64_t)total_len;
        self->counters[C_PK_OUT_SRC] += 1;
        self->counters[C_BY_OUT_SRC] += (uint64_t)total_len;
    }
    for (int s = 0; s < 2; s++) {
        if (e->steps[s] == STEP_SRC)
            rewrite(ip, ihl, tcp, 1, e->final, e->final + 8);
        else if (e->steps[s] == STEP_DST)
            rewrite(ip, ihl, tcp, 0, e->final + 4, e->final + 10);
    }
    if (at >= 0 && memcmp(old_addrs, ip + 12, 8) != 0) {
        /* dataplane._fix_partial_checksum: the address change alone, in the opposite sense */
        uint16_t was = get16(partial);
        put16(ip + at, (uint16_t)~replaced((uint16_t)~was, old_addrs, ip + 12, 4));
    }
    memcpy(frame + VNET_LEN, self->port_header[e->port], ETH_HLEN);
    if (send(self->port_fd[e->port], frame, (size_t)n, MSG_DONTWAIT) < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
            self->counters[C_TX_FULL] += 1;
        } else {
            self->last_errno = errno;
            return -1;
        }
    }
    return 1;
}

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
        int done = forward(self, (uint8_t *)buf.buf, n, deadline);
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
    int done = forward(self, (uint8_t *)buf.buf, n, deadline);
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
    if (find(self, key.buf) != NULL) {
        PyErr_SetString(PyExc_KeyError, "key already held");
        goto out;
    }
    if ((self->used + self->tombs + 1) * 2 > self->cap
        && resize(self, self->used * 4 > self->cap ? self->cap * 2 : self->cap) < 0)
        goto out;
    Entry *e = slot_for(self->table, self->cap, key.buf);
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
    Entry *e = find(self, key.buf);
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
    if (self->table == NULL && resize(self, 64) < 0)
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
