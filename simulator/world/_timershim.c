/*
 * natsim's timer shim: a preload library that puts the kernel timers a program sets on its
 * sockets into model time.
 *
 * A program natsim runs in a compressed world has its clock, sleeps and polls compressed by
 * libfaketime (LD_PRELOAD, FAKETIME="+offset xSPEED"). What libfaketime cannot reach are the
 * timers the kernel keeps for a socket: TCP keepalive (TCP_KEEPIDLE, TCP_KEEPINTVL, seconds),
 * TCP_USER_TIMEOUT (milliseconds) and SO_RCVTIMEO/SO_SNDTIMEO (a struct timeval). This shim
 * wraps setsockopt() and divides those values by the world's speed (NATSIM_SPEED), with the
 * rounding natsim uses for the keepalive sysctls: whole wall seconds, at least 1 (a
 * millisecond or a microsecond for the others; 0, "off", stays 0). getsockopt() gives the
 * program back the value it set, so a library that checks what it set sees its own number.
 *
 * What was scaled is reported, one JSON line per setting, to the file NATSIM_TIMER_LOG
 * (appended; natsim reads it) and, with NATSIM_TIMER_VERBOSE=1, to the program's stderr.
 *
 * Per socket, the shim remembers the model value it was given and the wall value it set; a
 * getsockopt() that finds the kernel still holding that wall value answers with the model
 * value, anything else (a descriptor reused for a new socket) passes through unchanged. No
 * close() wrapper is needed.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define SLOTS 4096 /* descriptors remembered; a higher one is scaled but not remembered */

enum { KEEPIDLE, KEEPINTVL, USER_TIMEOUT, RCVTIMEO, SNDTIMEO, KINDS };
static const char *NAMES[KINDS] = {"TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_USER_TIMEOUT",
                                   "SO_RCVTIMEO", "SO_SNDTIMEO"};
static const char *UNITS[KINDS] = {"s", "s", "ms", "s", "s"};

struct slot {
    long long model[KINDS]; /* microseconds for the timevals, the option's unit otherwise */
    long long wall[KINDS];
    unsigned char set[KINDS];
};

static struct slot slots[SLOTS];
static double speed = 1.0;
static int verbose = 0;
static const char *log_path = NULL;
static int (*real_setsockopt)(int, int, int, const void *, socklen_t);
static int (*real_getsockopt)(int, int, int, void *, socklen_t *);

__attribute__((constructor)) static void natsim_timershim_init(void) {
    const char *value = getenv("NATSIM_SPEED");
    if (value != NULL) {
        double parsed = strtod(value, NULL);
        if (parsed >= 1.0 && isfinite(parsed)) speed = parsed;
    }
    verbose = getenv("NATSIM_TIMER_VERBOSE") != NULL;
    log_path = getenv("NATSIM_TIMER_LOG");
    real_setsockopt = dlsym(RTLD_NEXT, "setsockopt");
    real_getsockopt = dlsym(RTLD_NEXT, "getsockopt");
}

static int kind_of(int level, int name) {
    if (level == IPPROTO_TCP && name == TCP_KEEPIDLE) return KEEPIDLE;
    if (level == IPPROTO_TCP && name == TCP_KEEPINTVL) return KEEPINTVL;
    if (level == IPPROTO_TCP && name == TCP_USER_TIMEOUT) return USER_TIMEOUT;
    if (level == SOL_SOCKET && name == SO_RCVTIMEO) return RCVTIMEO;
    if (level == SOL_SOCKET && name == SO_SNDTIMEO) return SNDTIMEO;
    return -1;
}

/* model -> wall: whole units (seconds, milliseconds), at least 1 unless 0 ("off") */
static long long scaled(long long model) {
    if (model <= 0) return model;
    long long wall = (long long)nearbyint((double)model / speed); /* half to even, as Python */
    return wall < 1 ? 1 : wall;
}

static void report(int fd, int kind, long long model, long long wall) {
    char line[320];
    double shown_model = kind >= RCVTIMEO ? model / 1e6 : (double)model;
    double shown_wall = kind >= RCVTIMEO ? wall / 1e6 : (double)wall;
    double really = shown_wall * speed;
    int n = snprintf(line, sizeof line,
                     "{\"pid\": %d, \"fd\": %d, \"option\": \"%s\", \"unit\": \"%s\", "
                     "\"model\": %.6g, \"wall\": %.6g, \"effective_model\": %.6g, "
                     "\"speed\": %g}\n",
                     (int)getpid(), fd, NAMES[kind], UNITS[kind], shown_model, shown_wall,
                     really, speed);
    if (n <= 0 || n >= (int)sizeof line) return;
    int saved = errno;
    if (log_path != NULL) {
        int out = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (out >= 0) {
            ssize_t ignored = write(out, line, (size_t)n);
            (void)ignored;
            close(out);
        }
    }
    if (verbose) {
        char text[320];
        int m = snprintf(text, sizeof text,
                         "natsim: %s %.6g model %s -> %.6g wall %s, really %.6g model %s\n",
                         NAMES[kind], shown_model, UNITS[kind], shown_wall, UNITS[kind],
                         really, UNITS[kind]);
        if (m > 0 && m < (int)sizeof text) {
            ssize_t ignored = write(2, text, (size_t)m);
            (void)ignored;
        }
    }
    errno = saved;
}

int setsockopt(int fd, int level, int name, const void *value, socklen_t length) {
    if (real_setsockopt == NULL) natsim_timershim_init();
    int kind = kind_of(level, name);
    if (kind < 0 || value == NULL || speed == 1.0) {
        return real_setsockopt(fd, level, name, value, length);
    }
    long long model, wall;
    int result;
    if (kind >= RCVTIMEO) {
        if (length < sizeof(struct timeval)) return real_setsockopt(fd, level, name, value, length);
        struct timeval tv;
        memcpy(&tv, value, sizeof tv);
        if (tv.tv_sec < 0 || tv.tv_usec < 0) return real_setsockopt(fd, level, name, value, length);
        model = (long long)tv.tv_sec * 1000000LL + tv.tv_usec;
        wall = scaled(model);
        struct timeval out = {.tv_sec = (time_t)(wall / 1000000LL),
                              .tv_usec = (suseconds_t)(wall % 1000000LL)};
        result = real_setsockopt(fd, level, name, &out, sizeof out);
    } else {
        if (length < sizeof(int)) return real_setsockopt(fd, level, name, value, length);
        int given;
        memcpy(&given, value, sizeof given);
        model = given;
        wall = scaled(model);
        int out = (int)wall;
        result = real_setsockopt(fd, level, name, &out, sizeof out);
    }
    if (result == 0) {
        if (fd >= 0 && fd < SLOTS) {
            slots[fd].model[kind] = model;
            slots[fd].wall[kind] = wall;
            slots[fd].set[kind] = 1;
        }
        if (model != wall) report(fd, kind, model, wall);
    }
    return result;
}

int getsockopt(int fd, int level, int name, void *value, socklen_t *length) {
    if (real_getsockopt == NULL) natsim_timershim_init();
    int result = real_getsockopt(fd, level, name, value, length);
    int kind = kind_of(level, name);
    if (result != 0 || kind < 0 || value == NULL || length == NULL || fd < 0 || fd >= SLOTS ||
        !slots[fd].set[kind]) {
        return result;
    }
    if (kind >= RCVTIMEO && *length >= sizeof(struct timeval)) {
        struct timeval tv;
        memcpy(&tv, value, sizeof tv);
        long long now = (long long)tv.tv_sec * 1000000LL + tv.tv_usec;
        long long off = now - slots[fd].wall[kind];
        /* the kernel keeps these in jiffies: what it gives back is within a tick (<= 10 ms) */
        if (off < 10000 && off > -10000) {
            tv.tv_sec = (time_t)(slots[fd].model[kind] / 1000000LL);
            tv.tv_usec = (suseconds_t)(slots[fd].model[kind] % 1000000LL);
            memcpy(value, &tv, sizeof tv);
        }
    } else if (kind < RCVTIMEO && *length >= sizeof(int)) {
        int now;
        memcpy(&now, value, sizeof now);
        if (now == slots[fd].wall[kind]) {
            int model = (int)slots[fd].model[kind];
            memcpy(value, &model, sizeof model);
        }
    }
    return result;
}
