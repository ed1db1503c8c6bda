/* The forwarding half of the fast path: the flow table and one frame's rewrite and
 * accounting (why it exists, and what it may decide: _fastpath.c). */

#include "_fastpath.h"
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

Entry *fp_find(FastPath *self, const uint8_t *key)
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

Entry *fp_slot_for(Entry *table, size_t cap, const uint8_t *key)
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

int fp_resize(FastPath *self, size_t cap)
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
            *fp_slot_for(table, cap, e->key) = *e;
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
int fp_forward(FastPath *self, uint8_t *frame, Py_ssize_t n, double deadline)
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
    Entry *e = fp_find(self, key);
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

