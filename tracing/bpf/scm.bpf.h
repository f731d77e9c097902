/*
 * The kernel side of SCM_RIGHTS, for the backends that can probe kernel
 * functions (kprobe, fentry).  The sender's fds are copied into a struct
 * scm_fp_list by __scm_send (net/core/scm.c; its scm_fp_copy is inlined on
 * recent kernels); the receiver's are installed one by one by receive_fd
 * (named __receive_fd before 6.8), called from scm_detach_fds.  Syscall
 * entry and exit come from the syscall tracepoints: entry keeps the socket
 * and flags, exit reports a sendmsg's result (a failed send is not a
 * transfer).
 *
 * Every struct is read at BTF offsets (OFF_*): scm_fp_list.fp is at 40 on
 * 6.10+ and 16 before, which is why nothing here is taken from headers.
 */

BPF_HASH(recving, u32, struct sent_files, MAX_SENDING);
BPF_HASH(scm_args, u32, u64, MAX_INFLIGHT);   /* __scm_send's scm_cookie *  */
BPF_HASH(kmsg_args, u32, u64, MAX_INFLIGHT);  /* scm_detach_fds's msghdr * */
BPF_HASH(rfd_file, u32, u64, MAX_INFLIGHT);   /* receive_fd's file, o_flags */
BPF_HASH(rfd_flags, u32, u32, MAX_INFLIGHT);

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

/* __scm_send returned: the files it took (fp list) and the fd numbers the
 * control data named (the kernel's copy of it, walked like user memory). */
static __always_inline void scm_send_done(u64 kmsg, u64 scm, s64 ret)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    int zero = 0;
    struct call_args *a = calls.lookup(&tid);
    if (!a)
        return;
    struct fd_scratch *s = fd_scratch.lookup(&zero);
    struct sent_files *sf = sent_scratch.lookup(&zero);
    if (!s || !sf)
        return;
    u64 control = 0, controllen = 0, fpl = 0;
    u32 seen = 0;
    bpf_probe_read_kernel(&control, sizeof(control), (void *)(kmsg + OFF_MSGHDR_MSG_CONTROL));
    bpf_probe_read_kernel(&controllen, sizeof(controllen),
                          (void *)(kmsg + OFF_MSGHDR_MSG_CONTROLLEN));
    u32 n = collect_fds(s, control, controllen, 0, &seen);
    if (!seen)
        return;
    s16 count = 0;
    /* On failure __scm_send has already freed the list: only fd numbers then. */
    if (ret == 0 && !bpf_probe_read_kernel(&fpl, sizeof(fpl), (void *)(scm + OFF_SCM_COOKIE_FP)) &&
        fpl)
        bpf_probe_read_kernel(&count, sizeof(count), (void *)(fpl + OFF_SCM_FP_LIST_COUNT));
    const struct fd_table *t = current_fd_table();
    if (!t)
        return;
    if (n > FD_SLOTS)
        n = FD_SLOTS;
    resolve_fds(t, s->fds, n, FD_SLOTS, 0, sf);
    /* The files the kernel itself took (none if __scm_send failed) replace
     * the table's: the table gave each fd's flags. */
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < FD_SLOTS; i++) {
        if (i >= n)
            break;
        OPAQUE(i);
        u64 file = 0;
        if ((s32)i < count)
            bpf_probe_read_kernel(&file, sizeof(file),
                                  (void *)(fpl + OFF_SCM_FP_LIST_FP + (u64)i * sizeof(u64)));
        sf->files[i] = file;
    }
    sf->n = n;
    sf->seen = seen;
    if (a->syscall == SYS_SENDMMSG) {
        /* One __scm_send per message: report each as it is taken. */
        struct fd_event *ev = new_event(EV_SEND, a, ret, a->scm_files);
        a->scm_files += 1;
        if (!ev)
            return;
        ev->fds_seen = seen;
        ev->queued = count;
        copy_sent_files(ev, sf, n, MMSG_FD_SLOTS);
        submit(ev);
        return;
    }
    a->queued = count;
    if (sent.update(&tid, sf))
        count_lost(1);
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

/* sys_exit_sendmsg: the result decides; the files were kept by scm_send_done. */
static __always_inline int scm_exit_sendmsg(s64 ret)
{
    struct call_args a;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    if (!take_call_args(tid, &a))
        return 0;
    struct sent_files *sf = sent.lookup(&tid);
    if (!sf)
        return 0;
    struct fd_event *ev = new_event(EV_SEND, &a, ret, 0);
    if (ev) {
        u32 n = sf->n;
        if (n > FD_SLOTS)
            n = FD_SLOTS;
        ev->fds_seen = sf->seen;
        copy_sent_files(ev, sf, n, FD_SLOTS);
        submit(ev);
    }
    sent.delete(&tid);
    return 0;
}

/* scm_detach_fds entered: remember the kernel msghdr; start an empty list. */
static __always_inline void scm_detach_begin(u64 kmsg, u64 scm)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    int zero = 0;
    struct call_args *a = calls.lookup(&tid);
    if (!a)
        return;
    u64 fpl = 0;
    s16 count = 0;
    if (!bpf_probe_read_kernel(&fpl, sizeof(fpl), (void *)(scm + OFF_SCM_COOKIE_FP)) && fpl)
        bpf_probe_read_kernel(&count, sizeof(count), (void *)(fpl + OFF_SCM_FP_LIST_COUNT));
    a->queued = count;
    struct sent_files *sf = sent_scratch.lookup(&zero);
    if (!sf)
        return;
    sf->n = 0;
    sf->seen = count;
    if (recving.update(&tid, sf) || kmsg_args.update(&tid, &kmsg))
        count_lost(1);
}

/* receive_fd returned fd for file: one more fd installed in this receive. */
static __always_inline void scm_received_fd(u64 file, u32 o_flags, s64 fd)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct sent_files *sf = recving.lookup(&tid);
    if (!sf || fd < 0)
        return;
    u32 n = sf->n;
    if (n >= FD_SLOTS)
        return;
    OPAQUE(n);
    n &= FD_INDEX_MASK;
    if (n >= FD_SLOTS)
        return;
    sf->fds[n] = fd;
    sf->files[n] = file;
    sf->fd_flags[n] = (o_flags & O_CLOEXEC) ? FD_FLAG_CLOEXEC : 0;
    sf->n = n + 1;
}

/* scm_detach_fds returned: report the fds installed, MSG_CTRUNC from msg_flags. */
static __always_inline void scm_detach_done(void)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct call_args *a = calls.lookup(&tid);
    struct sent_files *sf = recving.lookup(&tid);
    u64 *kmsg = kmsg_args.lookup(&tid);
    if (!a || !sf || !kmsg) {
        recving.delete(&tid);
        kmsg_args.delete(&tid);
        return;
    }
    struct fd_event *ev = new_event(EV_RECV, a, 0, a->scm_files);
    a->scm_files += 1;
    if (ev) {
        u32 msg_flags = 0;
        bpf_probe_read_kernel(&msg_flags, sizeof(msg_flags),
                              (void *)(*kmsg + OFF_MSGHDR_MSG_FLAGS));
        ev->msg_flags = msg_flags;
        u32 n = sf->n;
        if (n > FD_SLOTS)
            n = FD_SLOTS;
        ev->fds_seen = n;
        copy_sent_files(ev, sf, n, FD_SLOTS);
        submit(ev);
    }
    recving.delete(&tid);
    kmsg_args.delete(&tid);
}

/* sys_exit_recvmsg: a message cut short with no control buffer never reaches
 * scm_detach_fds; report its MSG_CTRUNC here, from the user msghdr. */
static __always_inline int scm_exit_recv(s64 ret, int mmsg)
{
    struct call_args a;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    if (!take_call_args(tid, &a))
        return 0;
    if (mmsg || ret < 0 || a.scm_files)
        return 0;
    u32 msg_flags = 0;
    bpf_probe_read_user(&msg_flags, sizeof(msg_flags), (void *)(a.msg + USER_MSGHDR_FLAGS));
    if (!(msg_flags & MSG_CTRUNC))
        return 0;
    struct fd_event *ev = new_event(EV_RECV, &a, ret, 0);
    if (ev) {
        ev->msg_flags = msg_flags;
        submit(ev);
    }
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
    u32 tid = (u32)bpf_get_current_pid_tgid();
    calls.delete(&tid);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_recvmsg)
{
    return scm_on_enter(SYS_RECVMSG, args->fd, (u64)args->msg, 1, args->flags);
}

TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg)
{
    return scm_exit_recv(args->ret, 0);
}

TRACEPOINT_PROBE(syscalls, sys_enter_recvmmsg)
{
    return scm_on_enter(SYS_RECVMMSG, args->fd, (u64)args->mmsg, args->vlen, args->flags);
}

TRACEPOINT_PROBE(syscalls, sys_exit_recvmmsg)
{
    return scm_exit_recv(args->ret, 1);
}
