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
 * Only sendmsg has an entry program: recvmsg, sendmmsg and recvmmsg take
 * their arguments at exit from the registers the syscall entry saved
 * (bpf_task_pt_regs()), which spares those calls a sys_enter program each.
 */
#include "prelude.bpf.h"
#include "maps.bpf.h"
#include "files.bpf.h"
#include "cmsg.bpf.h"
#include "causes.bpf.h"

/* Report one user msghdr whose control data names fds (or, received, was cut short). */
static __always_inline void emit_user_msghdr(u32 kind, const struct call_args *a, u64 hdr,
                                             s64 ret, u32 index, const u32 max,
                                             const int fast)
{
    u64 control = 0, controllen = 0;
    u32 msg_flags = 0, seen = 0;
    int zero = 0;
    struct fd_scratch *s = fd_scratch.lookup(&zero);
    if (!s)
        return;
    int have_chunk = 0;
    if (fast)
        have_chunk = read_user_msghdr_near(s, hdr, &control, &controllen, &msg_flags);
    else
        read_user_msghdr(hdr, &control, &controllen, &msg_flags);
    if (fast && !(msg_flags & MSG_CTRUNC) &&
        collect_single_fd(s, control, controllen, 1, have_chunk)) {
        /* The usual one-fd message: the event is written in place in the ring
         * (a receive cut short is an anomaly: the general path routes it). */
        struct fd_event *one = new_event_one(kind, a, ret, index);
        if (!one)
            return;
        one->msg_flags = msg_flags;
        one->controllen = controllen;
        one->fds_seen = 1;
        const struct fd_table *t = current_fd_table();
        u32 fl = 0;
        s32 fd = s->fds[0];
        u64 file = t ? resolve_fd(t, fd, &fl) : 0;
        one->files[0].fd = fd;
        one->files[0].fd_flags = fl;
        fill_file(&one->files[0], file);
        one->nfds = 1;
        remember_paths(one->files, 1);
        if (kind == EV_RECV && (fl & FD_FLAG_CLOEXEC))
            note_cloexec(fd, file);
        submit_one(one);
        return;
    }
    u32 n = collect_fds(s, control, controllen, 1, &seen);
    if (!seen && !(kind == EV_RECV && (msg_flags & MSG_CTRUNC)))
        return;
    struct fd_event *ev = new_event(kind, a, ret, index);
    if (!ev)
        return;
    ev->msg_flags = msg_flags;
    ev->controllen = controllen;
    ev->fds_seen = seen;
    if (seen > n || n > max)
        ev->ev_flags |= EV_FLAG_FDS_DROPPED;
    if (n > max)
        n = max;
    const struct fd_table *t = current_fd_table_read();
    if (t) {
        resolve_fds(t, s->fds, n, max, ev, 0);
        ev->nfds = n;
        if (fast) /* not per message of a sendmmsg/recvmmsg vector (verifier budget) */
            remember_paths(ev->files, UNREFINED(ev->nfds));
    }
    /* recvmsg only (recvmmsg's loop over messages has no room for these). */
    if (kind == EV_RECV && max == FD_SLOTS) {
        if (msg_flags & MSG_CTRUNC)
            note_ctrunc(ev, a->sock);
        if (a->flags & MSG_CMSG_CLOEXEC)
            note_cloexec_files(ev->files, ev->nfds);
    }
    submit(ev);
}

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
        sf->sock_file = file_of_fd(t1, sock);
    } else {
        const struct fd_table *t = current_fd_table_read();
        if (!t)
            return 0;
        resolve_fds(t, s->fds, n, FD_SLOTS, 0, sf);
        sf->sock_file = file_of_fd(t, sock);
    }
    sf->sock = sock;
    sf->flags = flags;
    sf->seen = seen;
    sf->n = n;
    return 1;
}

/* The calling thread's syscall arguments, as saved at entry in its pt_regs
 * (SYSCALL_ARG* offsets from BTF, per arch) and still there at sys_exit:
 * recvmsg, sendmmsg and recvmmsg need no sys_enter program. */
static __always_inline void syscall_args(struct call_args *a, u32 syscall)
{
    void *regs = (void *)bpf_task_pt_regs(bpf_get_current_task_btf());
    a->sock = (s32)btf_u64(regs, SYSCALL_ARG0);
    a->msg = btf_u64(regs, SYSCALL_ARG1);
    if (syscall == SYS_SENDMMSG || syscall == SYS_RECVMMSG) {
        a->vlen = (u32)btf_u64(regs, SYSCALL_ARG2);
        a->flags = (u32)btf_u64(regs, SYSCALL_ARG3);
    } else {
        a->vlen = 1;
        a->flags = (u32)btf_u64(regs, SYSCALL_ARG2);
    }
    a->syscall = syscall;
}

/* Only sendmsg is probed at entry: its fds are resolved before the kernel
 * takes them (a concurrent close must not be misreported). */
TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg)
{
    u64 id = bpf_get_current_pid_tgid();
    if (!wanted(id))
        return 0;
    stash_send((u32)id, (u64)args->msg, args->fd, args->flags); /* no SCM_RIGHTS: nothing kept */
    return 0;
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
    /* A SOCK_STREAM send of no data byte drops its fds: a LOST event first
     * (apart from the paths below, which the verifier then walks once). */
    if (args->ret == 0)
        lost_zero_length_send(sf, &a);
    if (sf->n == 1 && sf->seen == 1 && args->ret >= 0) {
        /* The usual one-fd message: written in place in the ring buffer (a
         * failed send is an anomaly: the general path routes it). */
        struct fd_event *one = new_event_one(EV_SEND, &a, args->ret, 0);
        if (one) {
            one->sock_file = sf->sock_file;
            one->fds_seen = 1;
            one->files[0].fd = sf->fds[0];
            one->files[0].fd_flags = sf->fd_flags[0];
            fill_file(&one->files[0], sf->files[0]);
            one->nfds = 1;
            remember_paths(one->files, 1);
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
    copy_sent_files(ev, sf, n, FD_SLOTS);
    remember_paths(ev->files, UNREFINED(ev->nfds));
    ev->sock_file = sf->sock_file;
    sf->n = 0;
    submit(ev);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg)
{
    if (args->ret < 0 || !wanted(bpf_get_current_pid_tgid()))
        return 0;
    struct call_args a = {};
    syscall_args(&a, SYS_RECVMSG);
    emit_user_msghdr(EV_RECV, &a, a.msg, args->ret, 0, FD_SLOTS, 1);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_sendmmsg)
{
    if (!wanted(bpf_get_current_pid_tgid()))
        return 0;
    struct call_args a = {};
    syscall_args(&a, SYS_SENDMMSG);
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
            probe_read_user(&len, sizeof(len), (void *)(hdr + USER_MMSGHDR_LEN));
            r = len;
        }
        emit_user_msghdr(EV_SEND, &a, hdr, r, i, MMSG_FD_SLOTS, 0);
    }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_recvmmsg)
{
    if (args->ret <= 0 || !wanted(bpf_get_current_pid_tgid()))
        return 0;
    struct call_args a = {};
    syscall_args(&a, SYS_RECVMMSG);
    u64 count = (u64)args->ret;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < MAX_MMSG; i++) {
        if (i >= count)
            break;
        u64 hdr = a.msg + (u64)i * USER_MMSGHDR_SIZE;
        u32 len = 0;
        probe_read_user(&len, sizeof(len), (void *)(hdr + USER_MMSGHDR_LEN));
        emit_user_msghdr(EV_RECV, &a, hdr, len, i, MMSG_FD_SLOTS, 0);
    }
    return 0;
}
