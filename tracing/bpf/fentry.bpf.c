/*
 * Backend "fentry": the same as the kprobe backend on BTF trampolines
 * (fentry/fexit), which see a function's arguments and its return value
 * together.  @RECEIVE_FD@ is replaced by the receive-fd function's name on
 * the running kernel (receive_fd since 6.8, __receive_fd before).
 */
struct socket;
struct msghdr;
struct scm_cookie;
struct file;

KRETFUNC_PROBE(__scm_send, struct socket *sock, struct msghdr *msg, struct scm_cookie *scm,
               int ret)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    if (calls.lookup(&tid))
        scm_send_done((u64)msg, (u64)scm, ret);
    return 0;
}

KFUNC_PROBE(scm_detach_fds, struct msghdr *msg, struct scm_cookie *scm)
{
    scm_detach_begin((u64)msg, (u64)scm);
    return 0;
}

KRETFUNC_PROBE(scm_detach_fds, struct msghdr *msg, struct scm_cookie *scm)
{
    scm_detach_done();
    return 0;
}

KRETFUNC_PROBE(@RECEIVE_FD@, struct file *file, int *ufd, unsigned int o_flags, int ret)
{
    scm_received_fd((u64)file, o_flags, ret);
    return 0;
}
