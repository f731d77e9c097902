/*
 * Shared by every backend: the per-thread state kept between probes, the
 * maps, and writing events to the ring buffer.  The event layout itself
 * (struct fd_event, struct fd_file) is generated in the prelude from
 * rawsys.trace.events.
 */
#include <uapi/linux/ptrace.h>

/* Hide a value's known range from clang, so that loop counters stay plain
 * compared integers the verifier can bound and masks stay in place. */
#define OPAQUE(x) asm volatile("" : "+r"(x))

/* bpf_probe_read_user() under a name of this project's own.  bcc's rewriter
 * looks bpf_probe_read_user up in /proc/kallsyms at every call it visits,
 * and bcc 0.26 rebuilds a table of every kernel symbol at each look-up
 * (kallsyms repeats names, so its table never looks complete): on 6.18 that
 * was a third of the tracepoint program's compile time.  All supported
 * kernels (5.8 on) have the helper, so bcc's fallback is not needed. */
static long (*probe_read_user)(void *dst, u32 size, const void *unsafe_ptr) =
    (void *)BPF_FUNC_probe_read_user;

/* Arguments of a traced call, kept from entry to exit (per thread). */
struct call_args {
    u64 ts_ns;
    u64 msg;          /* user struct msghdr * (or struct mmsghdr *) */
    u64 vlen;
    s32 sock;
    u32 flags;
    u32 syscall;
    u32 queued;       /* kprobe backends: files the kernel had queued */
    u32 scm_files;    /* kprobe backends: messages whose SCM_RIGHTS were handled */
    u32 detaching;    /* kprobe backends: inside scm_detach_fds */
};

/* Files found when a send starts (tracepoint) or when the kernel copies them (kprobe). */
struct sent_files {
    u32 n;
    u32 seen;
    s32 sock;         /* tracepoint backend: sendmsg's arguments, kept here so */
    u32 flags;        /* a send needs no entry in `calls` */
    u64 sock_file;    /* the socket's struct file (links a receive cut short to its send) */
    s32 fds[FD_SLOTS];
    u32 fd_flags[FD_SLOTS];
    u64 files[FD_SLOTS];
};

/* Scratch room for the fd numbers of one message, with slack for masked reads. */
struct fd_scratch {
    s32 fds[FD_ARRAY_LEN];
    u8 chunk[CMSG_LEN_ONE_FD]; /* a cmsghdr and its one fd, read at once */
    u8 window[2 * USER_WINDOW_LEN]; /* user memory around a msghdr (masked offsets) */
};

/* Routine events: a flood of them may fill this ring (then they are counted
 * in lost[LOST_ROUTINE] and in dropped_by_process, never silently). */
BPF_RINGBUF_OUTPUT(events, RING_PAGES);
/* Anomalies (a CTRUNC receive, a failed send, fds the probes could not
 * record, losses): their own ring, read first, so a flood of routine events
 * cannot crowd out the one event that explains a missing fd. */
BPF_RINGBUF_OUTPUT(anomalies, ANOMALY_RING_PAGES);
/* Per thread, kept between calls (LRU) and written in place: a hash update
 * and delete per syscall cost the traced program more than the reads. */
BPF_TABLE("lru_hash", u32, struct call_args, calls, MAX_INFLIGHT);
/* Per thread, kept between calls (LRU): written in place, never copied whole. */
BPF_BYTES_TABLE("lru_hash", u32, struct sent_files, sent, MAX_SENDING);
BPF_BYTES_TABLE("percpu_array", int, struct fd_event, event_scratch, 1);
BPF_BYTES_TABLE("percpu_array", int, struct sent_files, sent_scratch, 1);
BPF_BYTES_TABLE("percpu_array", int, struct fd_scratch, fd_scratch, 1);
/* Events written by this CPU since it last woke the reader. */
BPF_PERCPU_ARRAY(since_wakeup, u64, 1);
/* [LOST_ROUTINE]: routine events the ring buffer refused; [LOST_UNTRACKED]:
 * calls not tracked (map full); [LOST_ANOMALY]: anomalies the anomaly ring
 * refused (none unless the reader stops reading). */
BPF_PERCPU_ARRAY(lost, u64, LOST_SLOTS);

/* Every event the probes produced, counted before a ring is asked for room:
 * exact totals even when routine events are dropped.  Slot (kind - 1) * 2 +
 * anomaly; per CPU, so counting costs no atomic operation (an array lookup
 * the verifier inlines: a hash lookup per event would cost the traced
 * program about a tenth of its speed). */
BPF_PERCPU_ARRAY(produced, u64, PRODUCED_SLOTS);

/* The routine events a full ring refused, per process and direction: with
 * the events read, the exact count per process.  Only the drop path pays
 * for the hash. */
struct transfer_key {
    u32 pid;
    u8 kind;      /* EV_SEND / EV_RECV */
    u8 pad0;
    u16 pad1;
};
struct transfer_count {
    u64 events;
    u64 fds;
};
BPF_PERCPU_HASH(dropped_by_process, struct transfer_key, struct transfer_count, MAX_COUNTED_PIDS);

static __always_inline void count_lost(int which)
{
    u64 *n = lost.lookup(&which);
    if (n)
        *n += 1;
}

static __always_inline void count_event(u32 kind, u32 anomaly)
{
    int slot = ((kind - 1) & 1) * 2 + (anomaly & 1); /* a loss counts with receives */
    u64 *n = produced.lookup(&slot);
    if (n)
        *n += 1;
}

/* A routine event the full ring refused. */
static __always_inline void count_dropped(u32 kind, u32 nfds)
{
    count_lost(LOST_ROUTINE);
    struct transfer_key key = {};
    key.pid = bpf_get_current_pid_tgid() >> 32;
    key.kind = kind;
    struct transfer_count *c = dropped_by_process.lookup(&key);
    if (c) {
        c->events += 1;
        c->fds += nfds;
        return;
    }
    struct transfer_count first = {1, nfds};
    dropped_by_process.update(&key, &first);
}


static __always_inline int wanted(u64 pid_tgid)
{
#if FILTER_PID
    if (!pid_wanted(pid_tgid >> 32))
        return 0;
#endif
#if FILTER_TID
    if (!tid_wanted((u32)pid_tgid))
        return 0;
#endif
#if FILTER_UID
    if (!uid_wanted((u32)bpf_get_current_uid_gid()))
        return 0;
#endif
#if FILTER_COMM
    unsigned char comm[16] = {};
    bpf_get_current_comm(&comm, sizeof(comm));
    if (!comm_wanted(comm))
        return 0;
#endif
    return 1;
}

/* Every header field of ev, for the current thread (ev may be ring memory). */
static __always_inline void fill_header(struct fd_event *ev, u32 kind, const struct call_args *a,
                                        s64 ret, u32 index)
{
    u64 id = bpf_get_current_pid_tgid();
    ev->ts_ns = bpf_ktime_get_ns();
    ev->ret = ret;
    ev->pid = id >> 32;
    ev->tid = (u32)id;
    bpf_get_current_comm(&ev->comm, sizeof(ev->comm));
    ev->sock = a->sock;
    ev->call_flags = a->flags;
    ev->msg_flags = 0;
    ev->controllen = 0;
    ev->kind = kind;
    ev->syscall = a->syscall;
    ev->ev_flags = FILE_REF_T ? EV_FLAG_REF_IS_FILE_REF : 0;
    ev->reason = 0;
    ev->msg_index = index;
    ev->nfds = 0;
    ev->fds_seen = 0;
    ev->queued = a->queued;
    ev->pad1 = 0;
    ev->sock_file = 0;
}

/* A zeroed event header in per-CPU scratch, for the current thread. */
static __always_inline struct fd_event *new_event(u32 kind, const struct call_args *a,
                                                  s64 ret, u32 index)
{
    int zero = 0;
    struct fd_event *ev = event_scratch.lookup(&zero);
    if (!ev)
        return 0;
    fill_header(ev, kind, a, ret, index);
    return ev;
}

/* An event that explains a missing fd, rather than a routine transfer: a
 * failed send, a receive cut short (MSG_CTRUNC), fds the probes could not
 * record.  Such events go to the anomaly ring (routine ones never do). */
static __always_inline int is_anomaly(const struct fd_event *ev)
{
    return ev->kind == EV_LOST || ev->ret < 0 || (ev->msg_flags & MSG_CTRUNC) ||
           (ev->ev_flags & EV_FLAG_FDS_DROPPED);
}

/* Write *size* bytes at *data* (any record the reader knows) to the anomaly
 * ring, waking the reader at once; a refusal is counted in lost[LOST_ANOMALY].
 * Probes that report a loss or another anomaly call this directly. */
static __always_inline int emit_anomaly(void *data, u64 size)
{
    int err = anomalies.ringbuf_output(data, size, BPF_RB_FORCE_WAKEUP);
    if (err)
        count_lost(LOST_ANOMALY);
    return err;
}

/* The usual one-file event, written in place in the ring buffer (no copy
 * from scratch): the header and files[0] only; submit with submit_one(). */
static __always_inline struct fd_event *new_event_one(u32 kind, const struct call_args *a,
                                                      s64 ret, u32 index)
{
    count_event(kind, 0);
    struct fd_event *ev = events.ringbuf_reserve(EVENT_HEADER_SIZE + FILE_RECORD_SIZE);
    if (!ev) {
        count_dropped(kind, 1);
        return 0;
    }
    fill_header(ev, kind, a, ret, index);
    /* Ring memory holds older records: a name shorter than the field (none,
     * for pipes and sockets) must not leave their bytes behind it, so that
     * equal events are equal records (the reader formats repeats once). */
    __builtin_memset(ev->files[0].name, 0, sizeof(ev->files[0].name));
    return ev;
}

/* Wake the reader only once per batch: a wake-up per event costs the traced
 * program more than the probe itself.  The reader also consumes on its own
 * poll timeout, so a lone event waits at most that long. */
static __always_inline u64 wakeup_flag(void)
{
    int slot = 0;
    u64 *since = since_wakeup.lookup(&slot);
    if (since && ++*since >= RING_WAKEUP_EVENTS) {
        *since = 0;
        return BPF_RB_FORCE_WAKEUP;
    }
    return BPF_RB_NO_WAKEUP;
}

static __always_inline void submit_one(struct fd_event *ev)
{
    events.ringbuf_submit(ev, wakeup_flag());
}

/* Write an event built in scratch (new_event) to the ring its kind belongs
 * to: anomalies to their own ring, the rest to the routine one. */
static __always_inline void submit(struct fd_event *ev)
{
    u64 size = EVENT_HEADER_SIZE + (u64)ev->nfds * FILE_RECORD_SIZE;
    OPAQUE(size);
    if (size > sizeof(*ev))
        size = sizeof(*ev);
    u32 anomaly = is_anomaly(ev);
    count_event(ev->kind, anomaly);
    if (anomaly)
        emit_anomaly(ev, size);
    else if (events.ringbuf_output(ev, size, wakeup_flag()))
        count_dropped(ev->kind, ev->nfds);
}
