/*
 * Shared by every backend: the event layout, the maps, and the reads that
 * turn an fd number into the kernel's struct file and its identity.
 *
 * Kernel memory is read only with bpf_probe_read_kernel() at OFF_* offsets
 * taken from the running kernel's BTF; struct layouts from the headers bcc
 * compiles against are never used (they may be another kernel's).
 */
#include <uapi/linux/ptrace.h>

/* Hide a value's known range from clang, so that loop counters stay plain
 * compared integers the verifier can bound and masks stay in place. */
#define OPAQUE(x) asm volatile("" : "+r"(x))

/*@STRUCTS@*/

/*@FILTERS@*/

/* Arguments of a traced call, kept from entry to exit (per thread). */
struct call_args {
    u64 ts_ns;
    u64 msg;          /* user struct msghdr * (or struct mmsghdr *) */
    u64 vlen;
    s32 sock;
    u32 flags;
    u32 syscall;
    u32 queued;       /* kprobe backends: files the kernel had queued */
    u32 scm_files;    /* kprobe backends: files collected into sent_files */
    u32 pad;
};

/* Files found when a send starts (tracepoint) or when the kernel copies them (kprobe). */
struct sent_files {
    u32 n;
    u32 seen;
    s32 sock;         /* tracepoint backend: sendmsg's arguments, kept here so */
    u32 flags;        /* a send needs no entry in `calls` */
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

BPF_RINGBUF_OUTPUT(events, RING_PAGES);
/* Per thread, kept between calls (LRU) and written in place: a hash update
 * and delete per syscall cost the traced program more than the reads. */
BPF_TABLE("lru_hash", u32, struct call_args, calls, MAX_INFLIGHT);
/* Per thread, kept between calls (LRU): written in place, never copied whole. */
BPF_TABLE("lru_hash", u32, struct sent_files, sent, MAX_SENDING);
BPF_PERCPU_ARRAY(event_scratch, struct fd_event, 1);
BPF_PERCPU_ARRAY(sent_scratch, struct sent_files, 1);
BPF_PERCPU_ARRAY(fd_scratch, struct fd_scratch, 1);
/* Events written by this CPU since it last woke the reader. */
BPF_PERCPU_ARRAY(since_wakeup, u64, 1);
/* The calling thread's fd table, read once per message. */
struct fd_table {
    u64 fd_array;      /* struct file ** */
    u64 close_on_exec; /* unsigned long * */
    u32 max_fds;
};

/* Spans of kernel structs read in one go (see SPAN_* in tracing/program.py),
 * and the fd table: kept in a map, not on the stack, because the verifier
 * tracks stack copies of values and then fails to prune the per-fd loops. */
struct span_scratch {
    struct fd_table table;
    u8 file[MAX_SPAN];
    u8 inode[MAX_SPAN];
    u8 fdt[MAX_SPAN];
};
BPF_PERCPU_ARRAY(spans, struct span_scratch, 1);
#define SPAN_GET(buf, span, off, dst) \
    __builtin_memcpy(&(dst), (buf) + ((off) - SPAN_##span##_LO), sizeof(dst))

/* [0]: events the ring buffer refused; [1]: calls not tracked (map full) */
BPF_PERCPU_ARRAY(lost, u64, 2);

static __always_inline void count_lost(int which)
{
    u64 *n = lost.lookup(&which);
    if (n)
        *n += 1;
}


/* task->files->fdt, read with plain loads: bpf_get_current_task_btf() gives a
 * BTF-typed pointer, and the verifier checks each load against the running
 * kernel's BTF at the OFF_* offsets (which come from that same BTF); the JIT
 * turns them into fault-handled loads, far cheaper than a helper call each. */
static __always_inline void *btf_ptr(void *p, const u32 off) { return *(void **)(p + off); }
static __always_inline u64 btf_u64(void *p, const u32 off) { return *(u64 *)(p + off); }
static __always_inline u32 btf_u32(void *p, const u32 off) { return *(u32 *)(p + off); }

static __always_inline const struct fd_table *current_fd_table(void)
{
    int zero = 0;
    struct span_scratch *sp = spans.lookup(&zero);
    if (!sp)
        return 0;
    struct fd_table *t = &sp->table;
    t->fd_array = 0;
    t->close_on_exec = 0;
    t->max_fds = 0;
    struct task_struct *task = bpf_get_current_task_btf();
    void *files = btf_ptr((void *)task, OFF_TASK_STRUCT_FILES);
    if (!files)
        return t;
    void *fdt = btf_ptr(files, OFF_FILES_STRUCT_FDT);
    if (!fdt)
        return t;
    t->max_fds = btf_u32(fdt, OFF_FDTABLE_MAX_FDS);
    t->fd_array = btf_u64(fdt, OFF_FDTABLE_FD);
    t->close_on_exec = btf_u64(fdt, OFF_FDTABLE_CLOSE_ON_EXEC);
    return t;
}

/* The same with helper reads, for the paths with loops over many messages or
 * fds: there the verifier re-checks BTF-typed loads against the kernel's BTF
 * on every walk, which costs start-up time (tens of ms per program). */
static __always_inline const struct fd_table *current_fd_table_read(void)
{
    u64 task = bpf_get_current_task();
    u64 files = 0, fdt = 0;
    int zero = 0;
    struct span_scratch *sp = spans.lookup(&zero);
    if (!sp)
        return 0;
    struct fd_table *t = &sp->table;
    t->fd_array = 0;
    t->close_on_exec = 0;
    t->max_fds = 0;
    if (bpf_probe_read_kernel(&files, sizeof(files), (void *)task + OFF_TASK_STRUCT_FILES) || !files)
        return t;
    if (bpf_probe_read_kernel(&fdt, sizeof(fdt), (void *)files + OFF_FILES_STRUCT_FDT) || !fdt)
        return t;
    if (bpf_probe_read_kernel(sp->fdt, SPAN_FDTABLE_LEN, (void *)fdt + SPAN_FDTABLE_LO))
        return t;
    SPAN_GET(sp->fdt, FDTABLE, OFF_FDTABLE_MAX_FDS, t->max_fds);
    SPAN_GET(sp->fdt, FDTABLE, OFF_FDTABLE_FD, t->fd_array);
    SPAN_GET(sp->fdt, FDTABLE, OFF_FDTABLE_CLOSE_ON_EXEC, t->close_on_exec);
    return t;
}

/* fd -> struct file * in table t (0 if not open); *cloexec gets FD_FLAG_CLOEXEC. */
static __always_inline u64 resolve_fd(const struct fd_table *t, s32 fd, u32 *fd_flags)
{
    u64 file = 0, word = 0;
    *fd_flags = 0;
    if (fd < 0 || (u32)fd >= t->max_fds || !t->fd_array)
        return 0;
    bpf_probe_read_kernel(&file, sizeof(file), (void *)t->fd_array + (u64)fd * sizeof(u64));
    if (t->close_on_exec &&
        !bpf_probe_read_kernel(&word, sizeof(word),
                               (void *)t->close_on_exec + ((u64)fd / 64) * sizeof(u64)) &&
        (word >> ((u64)fd % 64)) & 1)
        *fd_flags = FD_FLAG_CLOEXEC;
    return file;
}

/* Identity of a struct file: inode number, mode, raw reference counter, name. */
static __always_inline void fill_file(struct fd_file *r, u64 file)
{
    u64 inode = 0, dentry = 0, name = 0;
    int zero = 0;
    r->file = file;
    r->ino = 0;
    r->ref_raw = 0;
    r->mode = 0;
    r->name[0] = 0;
    struct span_scratch *sp = spans.lookup(&zero);
    if (!file || !sp)
        return;
    if (bpf_probe_read_kernel(sp->file, SPAN_FILE_LEN, (void *)file + SPAN_FILE_LO))
        return;
    SPAN_GET(sp->file, FILE, OFF_FILE_F_COUNT, r->ref_raw);
    SPAN_GET(sp->file, FILE, OFF_FILE_F_INODE, inode);
    SPAN_GET(sp->file, FILE, OFF_FILE_F_PATH_DENTRY, dentry);
    if (inode && !bpf_probe_read_kernel(sp->inode, SPAN_INODE_LEN, (void *)inode + SPAN_INODE_LO)) {
        SPAN_GET(sp->inode, INODE, OFF_INODE_I_INO, r->ino);
        SPAN_GET(sp->inode, INODE, OFF_INODE_I_MODE, r->mode);
    }
    /* Pipes and sockets have no name of their own (theirs is made up from the
     * inode number, which is reported anyway): skip the string read. */
    u32 fmt = r->mode & S_IFMT;
    if (fmt == S_IFIFO || fmt == S_IFSOCK)
        return;
    if (dentry &&
        !bpf_probe_read_kernel(&name, sizeof(name), (void *)dentry + OFF_DENTRY_D_NAME_NAME) &&
        name)
        bpf_probe_read_kernel_str(r->name, sizeof(r->name), (void *)name);
}

/* The first n (at most slots) fds remembered in sf, with their files, into ev. */
static __always_inline void copy_sent_files(struct fd_event *ev, struct sent_files *sf,
                                            u32 n, const u32 slots)
{
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < slots; i++) {
        if (i >= n)
            break;
        OPAQUE(i);
        ev->files[i].fd = sf->fds[i];
        ev->files[i].fd_flags = sf->fd_flags[i];
        fill_file(&ev->files[i], sf->files[i]);
    }
    ev->nfds = n > slots ? slots : n;
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
    ev->pad0 = 0;
    ev->msg_index = index;
    ev->nfds = 0;
    ev->fds_seen = 0;
    ev->queued = a->queued;
    ev->pad1 = 0;
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

/* The usual one-file event, written in place in the ring buffer (no copy
 * from scratch): the header and files[0] only; submit with submit_one(). */
static __always_inline struct fd_event *new_event_one(u32 kind, const struct call_args *a,
                                                      s64 ret, u32 index)
{
    struct fd_event *ev = events.ringbuf_reserve(EVENT_HEADER_SIZE + FILE_RECORD_SIZE);
    if (!ev) {
        count_lost(0);
        return 0;
    }
    fill_header(ev, kind, a, ret, index);
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

static __always_inline void submit(struct fd_event *ev)
{
    u64 size = EVENT_HEADER_SIZE + (u64)ev->nfds * FILE_RECORD_SIZE;
    OPAQUE(size);
    if (size > sizeof(*ev))
        size = sizeof(*ev);
    if (events.ringbuf_output(ev, size, wakeup_flag()))
        count_lost(0);
}
