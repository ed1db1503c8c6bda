/* The fast path's shared definitions: the entry and the object, and the forwarding half's
 * entry points (_fastpath_forward.c) that the module half (_fastpath.c) calls. */
#ifndef NATSIM_FASTPATH_H
#define NATSIM_FASTPATH_H

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


Entry *fp_find(FastPath *self, const uint8_t *key);
Entry *fp_slot_for(Entry *table, size_t cap, const uint8_t *key);
int fp_resize(FastPath *self, size_t cap);
int fp_forward(FastPath *self, uint8_t *frame, Py_ssize_t n, double deadline);

#endif
