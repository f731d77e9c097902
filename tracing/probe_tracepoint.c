/*
 * Backend "tracepoint": syscall tracepoints only (no kprobes, no trampolines).
 *
 * sendmsg: at entry the user msghdr's control data is walked and every
 * SCM_RIGHTS fd resolved to its struct file in the sender's table; at exit
 * the result (ok or -errno) is reported with each file's identity, read then
 * (the reference count includes the in-flight reference of a queued skb).
 * recvmsg: at exit (ret >= 0) msg_flags, the control data the kernel wrote
 * and the fds it installed are read back and resolved in the receiver's
 * table, with close-on-exec from the fdtable bitmap.  sendmmsg/recvmmsg: the
 * same per message of the mmsghdr vector, at exit (bounded by MAX_MMSG).
 */

static __always_inline int stash_send(u32 tid, u64 hdr, s32 sock, u32 flags)
{
    u64 control = 0, controllen = 0;
    u32 seen = 0;
    int zero = 0;
    u32 msg_flags = 0;
    struct fd_scratch *s = fd_scratch.lookup(&zero);
    if (!s)
        return 0;
    int have_chunk = read_user_msghdr_near(s, hdr, &control, &controllen, &msg_flags);
    u32 n;
    if (collect_single_fd(s, control, controllen, 1, have_chunk))
        n = seen = 1;
    else
        n = collect_fds(s, control, controllen, 1, &seen);
    struct sent_files *sf = sent.lookup(&tid);
    if (!seen) {
        if (sf)
            sf->n = 0; /* a send without fds: nothing may be left to report */
        return 0;
    }
    if (!sf) {
        /* First send of this thread: its slot is created once, then reused. */
        struct sent_files *fresh = sent_scratch.lookup(&zero);
        if (!fresh || sent.update(&tid, fresh) || !(sf = sent.lookup(&tid))) {
            count_lost(1);
            return 0;
        }
    }
    if (n == 1 && seen == 1) {
        /* The usual one-fd message: the fd table through BTF-typed loads. */
        const struct fd_table *t1 = current_fd_table();
        if (!t1)
            return 0;
        u32 fl = 0;
        s32 fd = s->fds[0];
        sf->fds[0] = fd;
        sf->files[0] = resolve_fd(t1, fd, &fl);
        sf->fd_flags[0] = fl;
    } else {
        const struct fd_table *t = current_fd_table_read();
        if (!t)
            return 0;
#pragma clang loop unroll(disable)
        for (u32 i = 0; i < FD_SLOTS; i++) {
            if (i >= n)
                break;
            OPAQUE(i);
            u32 fl = 0;
            s32 fd = s->fds[i];
            sf->fds[i] = fd;
            sf->files[i] = resolve_fd(t, fd, &fl);
            sf->fd_flags[i] = fl;
        }
    }
    sf->sock = sock;
    sf->flags = flags;
    sf->seen = seen;
    sf->n = n;
    return 1;
}

static __always_inline int on_enter(u32 syscall, s32 sock, u64 msg, u64 vlen, u32 flags)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    if (!wanted(id))
        return 0;
    if (syscall == SYS_SENDMSG) {
        stash_send(tid, msg, sock, flags); /* without SCM_RIGHTS: nothing to report */
        return 0;
    }
    struct call_args *a = calls.lookup(&tid);
    if (!a) {
        struct call_args fresh = {};
        if (calls.update(&tid, &fresh) || !(a = calls.lookup(&tid))) {
            count_lost(1);
            return 0;
        }
    }
    a->msg = msg;
    a->vlen = vlen;
    a->sock = sock;
    a->flags = flags;
    a->queued = 0;
    a->scm_files = 0;
    a->syscall = syscall;
    return 0;
}

/* The entry record of this thread's call, removed from the map; 0 if none. */
static __always_inline int take_call(u32 syscall, struct call_args *out)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct call_args *p = calls.lookup(&tid);
    if (!p || !p->syscall)
        return 0;
    __builtin_memcpy(out, p, sizeof(*out));
    p->syscall = 0; /* consumed; the slot stays for the thread's next call */
    return out->syscall == syscall;
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg)
{
    return on_enter(SYS_SENDMSG, args->fd, (u64)args->msg, 1, args->flags);
}

TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct sent_files *sf = sent.lookup(&tid);
    if (!sf || !sf->n)
        return 0;
    struct call_args a = {};
    a.sock = sf->sock;
    a.flags = sf->flags;
    a.syscall = SYS_SENDMSG;
    if (sf->n == 1 && sf->seen == 1) {
        /* The usual one-fd message: written in place in the ring buffer. */
        struct fd_event *one = new_event_one(EV_SEND, &a, args->ret, 0);
        if (one) {
            one->fds_seen = 1;
            one->files[0].fd = sf->fds[0];
            one->files[0].fd_flags = sf->fd_flags[0];
            fill_file(&one->files[0], sf->files[0]);
            one->nfds = 1;
            submit_one(one);
        }
        sf->n = 0;
        return 0;
    }
    struct fd_event *ev = new_event(EV_SEND, &a, args->ret, 0);
    if (!ev) {
        sf->n = 0;
        return 0;
    }
    u32 n = sf->n;
    ev->fds_seen = sf->seen;
    if (sf->seen > n)
        ev->ev_flags |= EV_FLAG_FDS_DROPPED;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < FD_SLOTS; i++) {
        if (i >= n)
            break;
        OPAQUE(i);
        ev->files[i].fd = sf->fds[i];
        ev->files[i].fd_flags = sf->fd_flags[i];
        fill_file(&ev->files[i], sf->files[i]);
    }
    ev->nfds = n > FD_SLOTS ? FD_SLOTS : n;
    sf->n = 0;
    submit(ev);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_recvmsg)
{
    return on_enter(SYS_RECVMSG, args->fd, (u64)args->msg, 1, args->flags);
}

TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg)
{
    struct call_args a;
    if (!take_call(SYS_RECVMSG, &a) || args->ret < 0)
        return 0;
    emit_user_msghdr(EV_RECV, &a, a.msg, args->ret, 0, FD_SLOTS, 1);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendmmsg)
{
    return on_enter(SYS_SENDMMSG, args->fd, (u64)args->mmsg, args->vlen, args->flags);
}

TRACEPOINT_PROBE(syscalls, sys_exit_sendmmsg)
{
    struct call_args a;
    if (!take_call(SYS_SENDMMSG, &a))
        return 0;
    s64 ret = args->ret;
    /* ret < 0: the first message failed; else ret messages were sent. */
    u64 count = ret < 0 ? 1 : (u64)ret;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < MAX_MMSG; i++) {
        if (i >= count || i >= a.vlen)
            break;
        u64 hdr = a.msg + (u64)i * USER_MMSGHDR_SIZE;
        s64 r = ret;
        if (ret >= 0) {
            u32 len = 0;
            bpf_probe_read_user(&len, sizeof(len), (void *)(hdr + USER_MMSGHDR_LEN));
            r = len;
        }
        emit_user_msghdr(EV_SEND, &a, hdr, r, i, MMSG_FD_SLOTS, 0);
    }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_recvmmsg)
{
    return on_enter(SYS_RECVMMSG, args->fd, (u64)args->mmsg, args->vlen, args->flags);
}

TRACEPOINT_PROBE(syscalls, sys_exit_recvmmsg)
{
    struct call_args a;
    if (!take_call(SYS_RECVMMSG, &a) || args->ret <= 0)
        return 0;
    u64 count = (u64)args->ret;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < MAX_MMSG; i++) {
        if (i >= count)
            break;
        u64 hdr = a.msg + (u64)i * USER_MMSGHDR_SIZE;
        u32 len = 0;
        bpf_probe_read_user(&len, sizeof(len), (void *)(hdr + USER_MMSGHDR_LEN));
        emit_user_msghdr(EV_RECV, &a, hdr, len, i, MMSG_FD_SLOTS, 0);
    }
    return 0;
}
