/*
 * The kernel side of SCM_RIGHTS, for the backends that can probe kernel
 * functions (kprobe, fentry).  The sender's fds are copied into a struct
 * scm_fp_list by __scm_send (net/core/scm.c; its scm_fp_copy is inlined on
 * recent kernels); the receiver's are installed one by one by the function
 * that plays receive_fd (receive_fd since 6.8, __receive_fd before: told
 * apart by their BTF prototypes, rawsys.trace.kernel.shapes), called from
 * scm_detach_fds.  Their arguments are read at the positions the prelude's
 * ARG_* give, found in those prototypes.
 *
 * Each message's record is kept until the syscall returns, and the events
 * are written at its exit (syscall tracepoints): only then are the result,
 * each message's length and its final msg_flags known.  Within one call the
 * records are ranked in the order the kernel handled them; the exit pairs
 * them with the messages of the user's vector: a sendmmsg message reaches
 * __scm_send when its msg_controllen is not 0, a recvmmsg message holds the
 * place scm_detach_fds began writing at.
 *
 * Every struct is read at BTF offsets (OFF_*): scm_fp_list.fp is at 40 or at
 * 16 depending on the kernel build, not only on its version.
 */

/* One message's SCM_RIGHTS as the kernel handled it, kept until the syscall
 * returns.  Keyed by thread and rank (msg_key).  A received file's identity
 * is read when scm_detach_fds returns (its list's references dropped, the
 * counts final), a sendmsg's at the exit (as the tracepoint backend does), a
 * sendmmsg's when __scm_send returns; the exits then copy the records into
 * events in one read each. */
struct scm_msg {
    u32 n;                          /* fds recorded, at most FD_SLOTS */
    u32 seen;                       /* send: fds the control data named */
    u64 control;                    /* receive: where scm_detach_fds began (user memory) */
    u32 queued;                     /* files the kernel's list held */
    s32 err;                        /* send: __scm_send's result */
    u64 sock_file;                  /* send: the socket's struct file */
    struct fd_file files[FD_SLOTS]; /* each fd, its flags, its file and the file's identity */
};

/* The arguments a kprobe keeps from entry for its return probe. */
struct entry_args {
    u64 a;
    u64 b;
};

BPF_TABLE("lru_hash", u64, struct scm_msg, scm_msgs, MAX_SCM_MSGS);
BPF_PERCPU_ARRAY(scm_msg_scratch, struct scm_msg, 1);
BPF_HASH(entry_args, u32, struct entry_args, MAX_INFLIGHT);

static __always_inline u64 msg_key(u32 tid, u32 rank)
{
    return ((u64)tid << 32) | rank;
}

static __always_inline int scm_on_enter(u32 syscall, s32 sock, u64 msg, u64 vlen, u32 flags)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    if (!wanted(id))
        return 0;
    struct call_args a = {};
    a.ts_ns = bpf_ktime_get_ns();
    a.msg = msg;
    a.vlen = vlen;
    a.sock = sock;
    a.flags = flags;
    a.syscall = syscall;
    if (calls.update(&tid, &a))
        count_lost(1);
    return 0;
}

/* The arguments scm_on_enter() kept for thread tid, taken out of `calls`
 * into *a: 0 when there are none. */
static __always_inline int take_call_args(u32 tid, struct call_args *a)
{
    struct call_args *p = calls.lookup(&tid);
    if (!p)
        return 0;
    __builtin_memcpy(a, p, sizeof(*a));
    calls.delete(&tid);
    return 1;
}

/* The files the kernel's struct scm_fp_list holds, and where it is (0: none). */
static __always_inline u64 fp_list(u64 scm, s16 *count)
{
    u64 fpl = 0;
    *count = 0;
    if (!bpf_probe_read_kernel(&fpl, sizeof(fpl), (void *)(scm + OFF_SCM_COOKIE_FP)) && fpl)
        bpf_probe_read_kernel(count, sizeof(*count), (void *)(fpl + OFF_SCM_FP_LIST_COUNT));
    return fpl;
}

/* The identity of the first n (at most slots) files of record m, each read
 * where its .file points. */
static __always_inline void fill_files(struct scm_msg *m, u32 n, const u32 slots)
{
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < slots; i++) {
        if (i >= n)
            break;
        OPAQUE(i);
        fill_file(&m->files[i], m->files[i].file);
    }
}

/* The records of the first n messages of thread tid's call, forgotten. */
static __always_inline void forget_msgs(u32 tid, u32 n)
{
#pragma clang loop unroll(disable)
    for (u32 rank = 0; rank < MAX_MMSG; rank++) {
        if (rank >= n)
            break;
        OPAQUE(rank); /* else clang counts to n, which the verifier cannot bound */
        u64 key = msg_key(tid, rank);
        scm_msgs.delete(&key);
    }
}

/* __scm_send returned: the fd numbers the control data named (the kernel's
 * copy of it, walked like user memory) and the files it took (fp list),
 * kept as the call's next record.  Each message of a sendmmsg with control
 * data gets one, even without SCM_RIGHTS, so that ranks follow messages. */
static __always_inline void scm_send_done(u64 kmsg, u64 scm, s64 ret)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    int zero = 0;
    struct call_args *a = calls.lookup(&tid);
    if (!a)
        return;
    u32 rank = a->scm_files;
    a->scm_files = rank + 1;
    if (rank >= MAX_MMSG)
        return; /* past the messages the exit examines */
    struct fd_scratch *s = fd_scratch.lookup(&zero);
    struct scm_msg *m = scm_msg_scratch.lookup(&zero);
    if (!s || !m)
        return;
    u64 control = 0, controllen = 0;
    u32 seen = 0;
    bpf_probe_read_kernel(&control, sizeof(control), (void *)(kmsg + OFF_MSGHDR_MSG_CONTROL));
    bpf_probe_read_kernel(&controllen, sizeof(controllen),
                          (void *)(kmsg + OFF_MSGHDR_MSG_CONTROLLEN));
    u32 n = collect_fds(s, control, controllen, 0, &seen);
    if (!seen && a->syscall == SYS_SENDMSG)
        return; /* nothing to report, and no vector to keep in step with */
    if (n > FD_SLOTS)
        n = FD_SLOTS;
    s16 count = 0;
    /* On failure __scm_send has already freed the list: only fd numbers then. */
    u64 fpl = ret == 0 ? fp_list(scm, &count) : 0;
    const struct fd_table *t = current_fd_table_read();
    if (!t)
        return;
    /* The files the kernel itself took; the table gives each fd's flags. */
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < FD_SLOTS; i++) {
        if (i >= n)
            break;
        OPAQUE(i);
        u32 fl = 0;
        u64 file = 0;
        s32 fd = s->fds[i];
        resolve_fd(t, fd, &fl);
        if ((s32)i < count)
            bpf_probe_read_kernel(&file, sizeof(file),
                                  (void *)(fpl + OFF_SCM_FP_LIST_FP + (u64)i * sizeof(u64)));
        m->files[i].fd = fd;
        m->files[i].fd_flags = fl;
        m->files[i].file = file;
    }
    /* The identities: a sendmsg's are read at its exit, as the tracepoint
     * backend does; a sendmmsg's now, for the files its events can hold (its
     * exit, a loop over messages, cannot also loop over files on 6.1). */
    if (a->syscall == SYS_SENDMMSG)
        fill_files(m, n, MMSG_FD_SLOTS);
    m->n = n;
    m->seen = seen;
    m->sock_file = file_of_fd(t, a->sock);
    m->control = 0;
    m->queued = count;
    m->err = ret;
    u64 key = msg_key(tid, rank);
    if (scm_msgs.update(&key, m))
        count_lost(1);
}

/* One event for record m of message index, a send, a receive or (reason
 * given) a loss: its file records copied in one read (their identities were
 * read already). */
static __always_inline void emit_msg(u32 kind, const struct call_args *a, struct scm_msg *m,
                                     s64 ret, u32 index, u32 msg_flags, u64 controllen,
                                     const u32 slots, u32 reason)
{
    struct fd_event *ev = new_event(kind, a, ret, index);
    if (!ev)
        return;
    ev->reason = reason;
    ev->sock_file = m->sock_file;
    u32 n = m->n;
    if (n > slots)
        n = slots;
    ev->msg_flags = msg_flags;
    ev->controllen = controllen;
    ev->queued = m->queued;
    ev->fds_seen = kind == EV_SEND ? m->seen : m->n;
    if (ev->fds_seen > n)
        ev->ev_flags |= EV_FLAG_FDS_DROPPED;
    u64 size = (u64)n * FILE_RECORD_SIZE;
    OPAQUE(size);
    if (size > sizeof(ev->files))
        size = sizeof(ev->files);
    if (size && bpf_probe_read_kernel(ev->files, size, m->files))
        n = 0;
    ev->nfds = n;
    /* recvmsg only: within recvmmsg's loop over messages the verifier's
     * budget does not allow these (its losses are told from MSG_CTRUNC alone). */
    if (kind == EV_RECV && slots == FD_SLOTS) {
        if (msg_flags & MSG_CTRUNC)
            note_ctrunc(ev, a->sock);
        if (a->flags & MSG_CMSG_CLOEXEC)
            note_cloexec_files(ev->files, n);
    }
    submit(ev);
}

/* sys_exit_sendmsg: the result decides; the files were kept by scm_send_done. */
static __always_inline int scm_exit_sendmsg(s64 ret)
{
    struct call_args a;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    if (!take_call_args(tid, &a))
        return 0;
    u64 key = msg_key(tid, 0);
    struct scm_msg *m = scm_msgs.lookup(&key);
    if (m && m->seen) {
        fill_files(m, m->n, FD_SLOTS);
        remember_paths(m->files, UNREFINED(m->n));
        emit_msg(EV_SEND, &a, m, ret, 0, 0, 0, FD_SLOTS, 0);
        /* A SOCK_STREAM send of no data byte drops its fds. */
        if (zero_length_stream(a.sock, ret))
            emit_msg(EV_LOST, &a, m, ret, 0, 0, 0, FD_SLOTS, LOST_ZERO_LENGTH_STREAM);
    }
    forget_msgs(tid, a.scm_files);
    return 0;
}

/* sys_exit_sendmmsg: the messages sent (or the first, failed), each paired
 * with the next record when it had control data. */
static __always_inline int scm_exit_sendmmsg(s64 ret)
{
    struct call_args a;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    if (!take_call_args(tid, &a))
        return 0;
    /* ret < 0: the first message failed; else ret messages were sent. */
    u64 count = ret < 0 ? 1 : (u64)ret;
    u32 rank = 0;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < MAX_MMSG; i++) {
        if (i >= count || i >= a.vlen || rank >= a.scm_files)
            break;
        u64 hdr = a.msg + (u64)i * USER_MMSGHDR_SIZE;
        u64 controllen = 0;
        probe_read_user(&controllen, sizeof(controllen),
                            (void *)(hdr + USER_MSGHDR_CONTROLLEN));
        if (!controllen)
            continue;
        u64 key = msg_key(tid, rank);
        rank++;
        struct scm_msg *m = scm_msgs.lookup(&key);
        if (!m || !m->seen)
            continue;
        s64 r = ret;
        if (ret >= 0) {
            u32 len = 0;
            probe_read_user(&len, sizeof(len), (void *)(hdr + USER_MMSGHDR_LEN));
            r = len;
        }
        emit_msg(EV_SEND, &a, m, r, i, 0, 0, MMSG_FD_SLOTS, 0);
    }
    forget_msgs(tid, a.scm_files);
    return 0;
}

/* scm_detach_fds entered: a new record, empty, where this message's control
 * data is being written; receive_fd adds each fd installed. */
static __always_inline void scm_detach_begin(u64 kmsg, u64 scm)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    int zero = 0;
    struct call_args *a = calls.lookup(&tid);
    if (!a)
        return;
    a->detaching = 0;
    u32 rank = a->scm_files;
    struct scm_msg *m = scm_msg_scratch.lookup(&zero);
    if (rank >= MAX_MMSG || !m)
        return;
    s16 count = 0;
    fp_list(scm, &count);
    m->n = 0;
    m->seen = 0;
    m->queued = count;
    m->err = 0;
    m->sock_file = 0;
    m->control = 0;
    bpf_probe_read_kernel(&m->control, sizeof(m->control),
                          (void *)(kmsg + OFF_MSGHDR_MSG_CONTROL));
    u64 key = msg_key(tid, rank);
    if (scm_msgs.update(&key, m)) {
        count_lost(1);
        return;
    }
    a->detaching = 1;
}

/* receive_fd returned fd for file: one more fd installed in this receive. */
static __always_inline void scm_received_fd(u64 file, u32 o_flags, s64 fd)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct call_args *a = calls.lookup(&tid);
    if (!a || !a->detaching || fd < 0)
        return;
    u64 key = msg_key(tid, a->scm_files);
    struct scm_msg *m = scm_msgs.lookup(&key);
    if (!m)
        return;
    u32 n = m->n;
    if (n >= FD_SLOTS)
        return;
    OPAQUE(n);
    n &= FD_INDEX_MASK;
    if (n >= FD_SLOTS)
        return;
    m->files[n].fd = fd;
    m->files[n].fd_flags = (o_flags & O_CLOEXEC) ? FD_FLAG_CLOEXEC : 0;
    m->files[n].file = file;
    m->n = n + 1;
}

/* scm_detach_fds returned: it has dropped its list's references, so each
 * installed file's identity is read now; the record is complete. */
static __always_inline void scm_detach_done(void)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct call_args *a = calls.lookup(&tid);
    if (!a)
        return;
    u64 key = msg_key(tid, a->scm_files);
    struct scm_msg *m = a->detaching ? scm_msgs.lookup(&key) : 0;
    a->scm_files += 1;
    a->detaching = 0;
    if (!m)
        return;
    fill_files(m, m->n, FD_SLOTS);
    remember_paths(m->files, UNREFINED(m->n));
}

/* The receive of message index with msghdr hdr: its record m (or none: a
 * message cut short before any fd, reported when it says MSG_CTRUNC). */
static __always_inline void emit_recv(const struct call_args *a, struct scm_msg *m, s64 ret,
                                      u32 index, u32 msg_flags, u64 controllen, const u32 slots)
{
    if (m) {
        emit_msg(EV_RECV, a, m, ret, index, msg_flags, controllen, slots, 0);
        return;
    }
    if (!(msg_flags & MSG_CTRUNC))
        return;
    struct fd_event *ev = new_event(EV_RECV, a, ret, index);
    if (ev) {
        ev->msg_flags = msg_flags;
        ev->controllen = controllen;
        if (slots == FD_SLOTS)
            note_ctrunc(ev, a->sock);
        submit(ev);
    }
}

/* sys_exit_recvmsg: the message's record, with the result and the flags the
 * user got; a message cut short with no control buffer never reaches
 * scm_detach_fds: its MSG_CTRUNC alone is reported. */
static __always_inline int scm_exit_recvmsg(s64 ret)
{
    struct call_args a;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    if (!take_call_args(tid, &a))
        return 0;
    if (ret >= 0) {
        u64 control = 0, controllen = 0;
        u32 msg_flags = 0;
        read_user_msghdr(a.msg, &control, &controllen, &msg_flags);
        u64 key = msg_key(tid, 0);
        struct scm_msg *m = a.scm_files ? scm_msgs.lookup(&key) : 0;
        emit_recv(&a, m, ret, 0, msg_flags, controllen, FD_SLOTS);
    }
    forget_msgs(tid, a.scm_files);
    return 0;
}

/* sys_exit_recvmmsg: each message received, paired with the next record
 * when that record's place lies in the message's control buffer. */
static __always_inline int scm_exit_recvmmsg(s64 ret)
{
    struct call_args a;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    if (!take_call_args(tid, &a))
        return 0;
    u32 rank = 0;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < MAX_MMSG; i++) {
        if (ret <= 0 || i >= (u64)ret)
            break;
        u64 hdr = a.msg + (u64)i * USER_MMSGHDR_SIZE;
        u64 control = 0, controllen = 0;
        u32 msg_flags = 0, len = 0;
        read_user_msghdr(hdr, &control, &controllen, &msg_flags);
        probe_read_user(&len, sizeof(len), (void *)(hdr + USER_MMSGHDR_LEN));
        struct scm_msg *m = 0;
        if (rank < a.scm_files) {
            u64 key = msg_key(tid, rank);
            m = scm_msgs.lookup(&key);
            /* The kernel writes back the length it used: the place lies within. */
            if (m && control && m->control >= control && m->control <= control + controllen)
                rank++;
            else
                m = 0;
        }
        emit_recv(&a, m, len, i, msg_flags, controllen, MMSG_FD_SLOTS);
    }
    forget_msgs(tid, a.scm_files);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg)
{
    return scm_on_enter(SYS_SENDMSG, args->fd, (u64)args->msg, 1, args->flags);
}

TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg)
{
    return scm_exit_sendmsg(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendmmsg)
{
    return scm_on_enter(SYS_SENDMMSG, args->fd, (u64)args->mmsg, args->vlen, args->flags);
}

TRACEPOINT_PROBE(syscalls, sys_exit_sendmmsg)
{
    return scm_exit_sendmmsg(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_recvmsg)
{
    return scm_on_enter(SYS_RECVMSG, args->fd, (u64)args->msg, 1, args->flags);
}

TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg)
{
    return scm_exit_recvmsg(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_recvmmsg)
{
    return scm_on_enter(SYS_RECVMMSG, args->fd, (u64)args->mmsg, args->vlen, args->flags);
}

TRACEPOINT_PROBE(syscalls, sys_exit_recvmmsg)
{
    return scm_exit_recvmmsg(args->ret);
}
