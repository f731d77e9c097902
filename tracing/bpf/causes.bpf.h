/*
 * Why fds in flight are lost: the kernel drops the files of a message, and
 * tells nobody, when
 *   - recvmsg's control buffer is too small or absent (MSG_CTRUNC; the
 *     receive event carries the flag, and EV_FLAG_FD_TABLE_FULL when the
 *     receiver's fd table was full: EMFILE, not the buffer);
 *   - read/readv/recv/recvfrom take the message (no control buffer at all);
 *   - a SOCK_STREAM sendmsg carries no data byte (no skb holds the fds);
 *   - the receiving socket is released (close, exit) with the message queued;
 *   - the fds were received with close-on-exec and the receiver exec'd.
 * Each is seen from syscall and scheduler tracepoints, so every backend
 * includes this file.  A LOST event names the files where the kernel still
 * holds them (the skb's scm_fp_list, the fd table), read when the probe
 * runs; its header is the process whose action lost them.
 *
 * Kernel structs are read at OFF_* offsets from BTF: file.private_data ->
 * struct socket -> sk (AF_UNIX checked), its sk_receive_queue of sk_buffs,
 * UNIXCB(skb).fp (the skb's cb holds struct unix_skb_parms).
 */

/* What a read-like call saw at entry: the message at the head of the unix
 * socket's queue, which carried files (kept until the call returns). */
struct read_peek {
    u64 sk;
    u64 skb;
    u32 n;          /* files recorded */
    u32 count;      /* files the message carried */
    s32 sock;
    u32 syscall;
    u32 stream;
    u32 pad;
    struct fd_file files[LOST_FILES];
};

/* The latest fds a process received with close-on-exec (a ring per process). */
struct cloexec_rx {
    u32 n;
    u32 next;
    s32 fds[CLOEXEC_SLOTS];
    u64 files[CLOEXEC_SLOTS];
};

/* The close-on-exec fds still open when an execve began, kept until it succeeds. */
struct exec_lost {
    u32 n;
    u32 tid;
    char comm[16];
    struct fd_file files[CLOEXEC_SLOTS];
};

/* The unix sockets of an exiting process whose queues are examined. */
struct exit_socks {
    s32 fds[EXIT_SOCKS];
    u64 files[EXIT_SOCKS];
    u32 found;
};

/* File addresses taken from a closed socket's queue (slack for masked reads),
 * and where the walk of that queue stands between two bpf_loop() steps. */
struct lost_scratch {
    u64 addrs[4 * LOST_FILES];
    u32 n;
    u32 count;
    u64 skb;
    u64 head;
};

BPF_PERCPU_ARRAY(lost_scratch, struct lost_scratch, 1);
BPF_PERCPU_ARRAY(exit_socks_scratch, struct exit_socks, 1);
BPF_TABLE("lru_hash", u32, struct read_peek, read_peeks, MAX_READ_PEEKS);
BPF_PERCPU_ARRAY(read_peek_scratch, struct read_peek, 1);
BPF_TABLE("lru_hash", u32, struct cloexec_rx, cloexec_rx, MAX_CLOEXEC_PROCS);
BPF_TABLE("lru_hash", u32, struct exec_lost, exec_losts, MAX_CLOEXEC_PROCS);
BPF_PERCPU_ARRAY(exec_lost_scratch, struct exec_lost, 1);

/* kread_u64(addr): files.bpf.h */

/* The struct sock of file when it is an AF_UNIX socket, else 0. */
static __always_inline u64 unix_sk_of_file(u64 file)
{
    u16 mode = 0, family = 0;
    if (!file)
        return 0;
    u64 inode = kread_u64(file + OFF_FILE_F_INODE);
    if (!inode || bpf_probe_read_kernel(&mode, sizeof(mode), (void *)(inode + OFF_INODE_I_MODE)))
        return 0;
    if ((mode & S_IFMT) != S_IFSOCK)
        return 0;
    u64 sock = kread_u64(file + OFF_FILE_PRIVATE_DATA);
    u64 sk = sock ? kread_u64(sock + OFF_SOCKET_SK) : 0;
    if (!sk || bpf_probe_read_kernel(&family, sizeof(family),
                                     (void *)(sk + OFF_SOCK___SK_COMMON_SKC_FAMILY)))
        return 0;
    return family == AF_UNIX ? sk : 0;
}

/* The socket type (SOCK_STREAM, ...) of a socket's struct file. */
static __always_inline s32 socket_type(u64 file)
{
    s16 type = 0;
    u64 sock = kread_u64(file + OFF_FILE_PRIVATE_DATA);
    if (sock)
        bpf_probe_read_kernel(&type, sizeof(type), (void *)(sock + OFF_SOCKET_TYPE));
    return type;
}

/* fd's struct file in the calling thread's table, nothing else read. */
static __always_inline u64 file_of_fd(const struct fd_table *t, s32 fd)
{
    if (fd < 0 || (u32)fd >= t->max_fds || !t->fd_array)
        return 0;
    return kread_u64(t->fd_array + (u64)fd * sizeof(u64));
}

/* The struct file of the socket connected to unix socket fd (its peer), or 0. */
static __always_inline u64 peer_sock_file(s32 fd)
{
    const struct fd_table *t = current_fd_table_read();
    if (!t)
        return 0;
    u64 sk = unix_sk_of_file(file_of_fd(t, fd));
    u64 peer = sk ? kread_u64(sk + OFF_UNIX_SOCK_PEER) : 0;
    u64 sock = peer ? kread_u64(peer + OFF_SOCK_SK_SOCKET) : 0;
    return sock ? kread_u64(sock + OFF_SOCKET_FILE) : 0;
}

/* A SOCK_STREAM unix socket: a send of 0 data bytes drops its fds. */
static __always_inline int zero_length_stream(s32 fd, s64 ret)
{
    if (ret != 0)
        return 0;
    const struct fd_table *t = current_fd_table_read();
    if (!t)
        return 0;
    u64 file = file_of_fd(t, fd);
    return unix_sk_of_file(file) && socket_type(file) == SOCK_STREAM;
}

/* The calling process cannot open one more fd (RLIMIT_NOFILE reached, every
 * slot below it used): what makes receive_fd fail with EMFILE. */
static __always_inline int fd_table_full(void)
{
    u64 task = bpf_get_current_task();
    u64 files = kread_u64(task + OFF_TASK_STRUCT_FILES);
    u64 signal = kread_u64(task + OFF_TASK_STRUCT_SIGNAL);
    if (!files || !signal)
        return 0;
    u64 limit = kread_u64(signal + OFF_SIGNAL_STRUCT_RLIM + RLIMIT_NOFILE * RLIMIT_SIZE);
    u32 next = 0, max_fds = 0;
    bpf_probe_read_kernel(&next, sizeof(next), (void *)(files + OFF_FILES_STRUCT_NEXT_FD));
    if (next >= limit)
        return 1;
    u64 fdt = kread_u64(files + OFF_FILES_STRUCT_FDT);
    if (!fdt)
        return 0;
    bpf_probe_read_kernel(&max_fds, sizeof(max_fds), (void *)(fdt + OFF_FDTABLE_MAX_FDS));
    if (limit > max_fds)
        return 0; /* the table would grow: a slot is free */
    u64 open_fds = kread_u64(fdt + OFF_FDTABLE_OPEN_FDS);
    if (!open_fds)
        return 0;
    /* Every bit from next_fd (the lowest maybe free) up to the limit set? */
#pragma clang loop unroll(disable)
    for (u32 w = 0; w < FULL_SCAN_WORDS; w++) {
        u64 idx = next / 64 + w;
        OPAQUE(idx);
        if (idx * 64 >= limit)
            return 1;
        u64 word = kread_u64(open_fds + idx * sizeof(u64));
        u64 bits = limit - idx * 64;
        u64 mask = bits >= 64 ? ~0ULL : ((1ULL << bits) - 1);
        if (~word & mask)
            return 0;
    }
    return 0; /* a table this large is not scanned: said to be CTRUNC */
}

/* A receive that came back with MSG_CTRUNC: which socket sent the message
 * (its peer's struct file, to link the send whose fds were dropped), and
 * whether the fd table was full (EMFILE) rather than the buffer too small. */
static __always_inline void note_ctrunc(struct fd_event *ev, s32 sock)
{
    ev->sock_file = peer_sock_file(sock);
    if (fd_table_full())
        ev->ev_flags |= EV_FLAG_FD_TABLE_FULL;
}

/* fd (file) was received with close-on-exec: remembered for the process's
 * next exec (CLOEXEC_SLOTS per process, the latest kept). */
static __always_inline void note_cloexec(s32 fd, u64 file)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct cloexec_rx *r = cloexec_rx.lookup(&tgid);
    if (!r) {
        struct cloexec_rx fresh = {};
        cloexec_rx.update(&tgid, &fresh);
        r = cloexec_rx.lookup(&tgid);
        if (!r)
            return;
    }
    u32 slot = r->next;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < CLOEXEC_SLOTS; i++) {
        if (i >= r->n)
            break;
        OPAQUE(i);
        if (r->fds[i & (CLOEXEC_SLOTS - 1)] == fd) {
            slot = i; /* the same fd number again: its latest file replaces it */
            break;
        }
    }
    slot &= CLOEXEC_SLOTS - 1;
    r->fds[slot] = fd;
    r->files[slot] = file;
    if (slot == (r->next & (CLOEXEC_SLOTS - 1))) {
        r->next = (slot + 1) & (CLOEXEC_SLOTS - 1);
        if (r->n < CLOEXEC_SLOTS)
            r->n += 1;
    }
}

/* The close-on-exec ones of the first CLOEXEC_SLOTS fds just received. */
static __always_inline void note_cloexec_files(const struct fd_file *files, u32 n)
{
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < CLOEXEC_SLOTS; i++) {
        if (i >= n)
            break;
        OPAQUE(i);
        if (files[i].fd_flags & FD_FLAG_CLOEXEC)
            note_cloexec(files[i].fd, files[i].file);
    }
}

/* A LOST event for the calling thread, in per-CPU scratch (submit() it). */
static __always_inline struct fd_event *new_lost(u32 reason, u32 syscall, s32 sock)
{
    struct call_args a = {};
    a.sock = sock;
    a.syscall = syscall;
    struct fd_event *ev = new_event(EV_LOST, &a, 0, 0);
    if (ev)
        ev->reason = reason;
    return ev;
}

/* The files of scm_fp_list fpl into files[at..] (at most LOST_FILES in all),
 * without their identities; returns the new count, adds the list's to *count. */
static __always_inline u32 add_fp_files(struct fd_file *files, u64 fpl, u32 at, u32 *count)
{
    s16 n = 0;
    bpf_probe_read_kernel(&n, sizeof(n), (void *)(fpl + OFF_SCM_FP_LIST_COUNT));
    u32 total = *count;
    if (n > 0)
        total += n;
    OPAQUE(total); /* counters the verifier need not follow: its states then merge */
    *count = total;
    OPAQUE(at);
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < LOST_FILES; i++) {
        if ((s32)i >= n || at >= LOST_FILES)
            break;
        OPAQUE(i);
        u32 k = at & (LOST_FILES - 1);
        files[k].fd = -1;
        files[k].fd_flags = 0;
        files[k].file = kread_u64(fpl + OFF_SCM_FP_LIST_FP + (u64)i * sizeof(u64));
        at++;
    }
    return at;
}

/* Where loop__fill_lost_file finds the records whose identities it reads
 * (each record's .file set already): in the LOST event being written
 * (event_scratch), in the message a read peeked at (read_peek_scratch), or
 * in the close-on-exec files of an exec (exec_lost_scratch).  One callback
 * for the three: each copy of fill_file() costs bcc's compile. */
enum lost_fill { FILL_EVENT, FILL_PEEK, FILL_EXEC };
BPF_PERCPU_ARRAY(lost_fill_from, u32, 1);

long loop__fill_lost_file(u64 i)
{
    int zero = 0;
    u32 *from = lost_fill_from.lookup(&zero);
    if (!from || i >= LOST_FILES)
        return 1;
    /* OPAQUE after each null check: clang would otherwise merge the three
     * checks after the address arithmetic, which older verifiers (6.1)
     * refuse on a pointer not yet checked. */
    struct fd_file *r;
    if (*from == FILL_PEEK) {
        struct read_peek *p = read_peek_scratch.lookup(&zero);
        if (!p)
            return 1;
        OPAQUE(p);
        r = &p->files[i];
    } else if (*from == FILL_EXEC) {
        struct exec_lost *x = exec_lost_scratch.lookup(&zero);
        if (!x || i >= CLOEXEC_SLOTS)
            return 1;
        OPAQUE(x);
        r = &x->files[i];
    } else {
        struct fd_event *ev = event_scratch.lookup(&zero);
        if (!ev)
            return 1;
        OPAQUE(ev);
        r = &ev->files[i];
    }
    fill_file(r, r->file);
    return 0;
}

/* Records 0..n of *from* (FILL_*) get their identities, read where each
 * record's .file points; a bpf_loop(), so the verifier checks fill_file()
 * once rather than once per record. */
static __always_inline void fill_lost_files(u32 from, u32 n)
{
    int zero = 0;
    u32 *where = lost_fill_from.lookup(&zero);
    if (!where)
        return;
    *where = from;
    LOOP(n, FILL_LOST_FILE);
}

/* sendmsg returned 0 for the message kept in sf: on a SOCK_STREAM socket
 * its fds were dropped (no skb carries them), reported with the first
 * LOST_FILES of them. */
static __always_inline void lost_zero_length_send(struct sent_files *sf,
                                                  const struct call_args *a)
{
    if (!sf->n || !zero_length_stream(sf->sock, 0))
        return;
    struct fd_event *ev = new_lost(LOST_ZERO_LENGTH_STREAM, SYS_SENDMSG, sf->sock);
    if (!ev)
        return;
    ev->call_flags = a->flags;
    ev->sock_file = sf->sock_file;
    copy_sent_files(ev, sf, sf->n, LOST_FILES);
    ev->fds_seen = sf->seen;
    submit(ev);
}

/* ---------------------------------------------------- read without control */

static __always_inline void read_enter(s32 fd, u32 flags, u32 syscall)
{
    u64 id = bpf_get_current_pid_tgid();
    if ((flags & MSG_PEEK) || !wanted(id))
        return;
    const struct fd_table *t = current_fd_table_read();
    if (!t)
        return;
    u64 file = file_of_fd(t, fd);
    u64 sk = unix_sk_of_file(file);
    if (!sk)
        return;
    u64 skb = kread_u64(sk + OFF_SOCK_SK_RECEIVE_QUEUE_NEXT);
    if (!skb || skb == sk + OFF_SOCK_SK_RECEIVE_QUEUE)
        return; /* nothing queued */
    u64 fpl = kread_u64(skb + OFF_SK_BUFF_CB + OFF_UNIX_SKB_PARMS_FP);
    if (!fpl)
        return; /* the next message carries no fds */
    int zero = 0;
    struct read_peek *p = read_peek_scratch.lookup(&zero);
    if (!p)
        return;
    u32 count = 0;
    p->sk = sk;
    p->skb = skb;
    p->sock = fd;
    p->syscall = syscall;
    p->stream = socket_type(file) == SOCK_STREAM;
    p->n = add_fp_files(p->files, fpl, 0, &count);
    p->count = count;
    fill_lost_files(FILL_PEEK, p->n);
    u32 tid = (u32)id;
    if (read_peeks.update(&tid, p))
        count_lost(1);
}

/* The read returned: if it took the message seen at entry (its fds are no
 * longer on the queue's head), they were dropped. */
static __always_inline void read_exit(s64 ret)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct read_peek *p = read_peeks.lookup(&tid);
    if (!p)
        return;
    if (ret > 0 || (ret == 0 && !p->stream)) {
        u64 head = kread_u64(p->sk + OFF_SOCK_SK_RECEIVE_QUEUE_NEXT);
        u64 fpl = head ? kread_u64(head + OFF_SK_BUFF_CB + OFF_UNIX_SKB_PARMS_FP) : 0;
        if (head != p->skb || !fpl) {
            struct fd_event *ev = new_lost(LOST_READ_WITHOUT_CONTROL, p->syscall, p->sock);
            if (ev) {
                u32 n = p->n;
                if (n > LOST_FILES)
                    n = LOST_FILES;
                u64 size = (u64)n * FILE_RECORD_SIZE;
                OPAQUE(size);
                if (size > sizeof(p->files))
                    size = sizeof(p->files);
                if (size && bpf_probe_read_kernel(ev->files, size, p->files))
                    n = 0;
                ev->nfds = n;
                ev->fds_seen = p->count;
                ev->ret = ret;
                submit(ev);
            }
        }
    }
    read_peeks.delete(&tid);
}

/* Also attached to sys_enter_readv, whose fd is at the same place
 * (rawsys.trace.bpf.program.SHARED_TRACEPOINTS): one program, verified once. */
TRACEPOINT_PROBE(syscalls, sys_enter_read)
{
    read_enter((s32)args->fd, 0, SYS_READ);
    return 0;
}

/* Also attached to sys_exit_readv and sys_exit_recvfrom (the same ret). */
TRACEPOINT_PROBE(syscalls, sys_exit_read)
{
    read_exit(args->ret);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom)
{
    read_enter((s32)args->fd, (u32)args->flags, SYS_READ);
    return 0;
}

/* ------------------------------------------------------------ socket closed */

/* One message of the queue walked in lost_scratch (ls->skb, up to ls->head):
 * its list's files are added to ls->addrs[ls->n..] (LOST_FILES in all) and
 * counted in ls->count, in one read; 1 (stop) at the end of the queue. */
long loop__walk_queue(u64 step)
{
    int zero = 0;
    struct lost_scratch *ls = lost_scratch.lookup(&zero);
    if (!ls)
        return 1;
    u64 skb = ls->skb;
    if (!skb || skb == ls->head)
        return 1;
    u64 fpl = kread_u64(skb + OFF_SK_BUFF_CB + OFF_UNIX_SKB_PARMS_FP);
    ls->skb = kread_u64(skb + OFF_SK_BUFF_NEXT);
    s16 c = 0;
    if (!fpl || bpf_probe_read_kernel(&c, sizeof(c), (void *)(fpl + OFF_SCM_FP_LIST_COUNT)) ||
        c <= 0)
        return 0;
    ls->count += c;
    u32 got = ls->n;
    if (got >= LOST_FILES)
        return 0;
    u32 take = c;
    if (take > LOST_FILES - got)
        take = LOST_FILES - got;
    u32 at = got & (LOST_FILES - 1);
    u32 bytes = take * sizeof(u64);
    OPAQUE(bytes);
    bytes &= 2 * LOST_FILES * sizeof(u64) - 1;
    bpf_probe_read_kernel(&ls->addrs[at], bytes, (void *)(fpl + OFF_SCM_FP_LIST_FP));
    ls->n = got + take;
    return 0;
}

/* When file is the last reference to a unix socket (sk: its unix_sk_of_file,
 * 0 for any other file), the files its queued messages carry (QUEUE_WALK
 * messages at most) are added to ls->addrs[ls->n..] (LOST_FILES in all) and
 * counted in ls->count: ls is lost_scratch, the state of loop__walk_queue. */
static __always_inline void collect_queued(u64 file, u64 sk, struct lost_scratch *ls)
{
    if (!sk)
        return;
    u64 raw = kread_u64(file + OFF_FILE_F_COUNT);
    if (FILE_REF_T ? raw != 0 : raw != 1)
        return; /* another reference keeps the socket (and its queue) alive */
    ls->head = sk + OFF_SOCK_SK_RECEIVE_QUEUE;
    ls->skb = kread_u64(sk + OFF_SOCK_SK_RECEIVE_QUEUE_NEXT);
    LOOP(QUEUE_WALK, WALK_QUEUE);
}

/* A socket-closed LOST event for the files collected in ls (nothing when none). */
static __always_inline void emit_queued(struct lost_scratch *ls, s32 fd, u32 syscall)
{
    u32 n = ls->n, count = ls->count;
    if (!count)
        return; /* no message carried fds */
    struct fd_event *ev = new_lost(LOST_SOCKET_CLOSED, syscall, fd);
    if (!ev)
        return;
    if (n > LOST_FILES)
        n = LOST_FILES;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < LOST_FILES; i++) {
        if (i >= n)
            break;
        OPAQUE(i);
        u32 k = i & (LOST_FILES - 1);
        ev->files[k].fd = -1;
        ev->files[k].fd_flags = 0;
        ev->files[k].file = ls->addrs[k];
    }
    fill_lost_files(FILL_EVENT, n);
    ev->nfds = n;
    ev->fds_seen = count;
    submit(ev);
}

/* Every close of a traced process runs this, and almost none is of a unix
 * socket: that answer comes first, from the table's plain loads and three
 * reads (fd slot, inode, mode), before any scratch is touched.  With the
 * table read by helpers and the scratch first, a pipe's close took 340 ns
 * here and cost the fastest fd-passer (which closes each fd it receives)
 * 0.04 of its traced/untraced ratio. */
TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
    if (!wanted(bpf_get_current_pid_tgid()))
        return 0;
    const struct fd_table *t = current_fd_table();
    u64 file = t ? file_of_fd(t, (s32)args->fd) : 0;
    u64 sk = unix_sk_of_file(file);
    if (!sk)
        return 0;
    int zero = 0;
    struct lost_scratch *ls = lost_scratch.lookup(&zero);
    if (!ls)
        return 0;
    ls->n = 0;
    ls->count = 0;
    collect_queued(file, sk, ls);
    emit_queued(ls, (s32)args->fd, SYS_CLOSE);
    return 0;
}

/* fd of the exiting process (its table in spans): a socket at all?  Only the
 * fd's inode mode is read here; each one goes to exit_socks_scratch, and
 * the walk stops (1) at EXIT_SOCKS of them or at the end of the table. */
long loop__find_exit_sock(u64 fd)
{
    int zero = 0;
    struct exit_socks *xs = exit_socks_scratch.lookup(&zero);
    struct span_scratch *sp = spans.lookup(&zero);
    if (!xs || !sp)
        return 1;
    u32 found = xs->found;
    if (found >= EXIT_SOCKS || fd >= sp->table.max_fds)
        return 1;
    u64 file = file_of_fd(&sp->table, (s32)fd);
    u64 inode = file ? kread_u64(file + OFF_FILE_F_INODE) : 0;
    u16 mode = 0;
    if (!inode || bpf_probe_read_kernel(&mode, sizeof(mode), (void *)(inode + OFF_INODE_I_MODE)) ||
        (mode & S_IFMT) != S_IFSOCK)
        return 0;
    u32 k = found & (EXIT_SOCKS - 1);
    xs->fds[k] = (s32)fd;
    xs->files[k] = file;
    xs->found = found + 1;
    return 0;
}

/* The process's last thread exits: its fd table is closed after this
 * tracepoint (do_exit: exit_files), so its sockets are still there. */
TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (!wanted(id))
        return 0;
    cloexec_rx.delete(&tgid);
    u64 task = bpf_get_current_task();
    u64 files = kread_u64(task + OFF_TASK_STRUCT_FILES);
    s32 users = 0;
    if (!files || bpf_probe_read_kernel(&users, sizeof(users),
                                        (void *)(files + OFF_FILES_STRUCT_COUNT)) || users != 1)
        return 0;
    const struct fd_table *t = current_fd_table_read();
    if (!t)
        return 0;
    /* First the unix sockets among the first EXIT_FDS fds, then their queues. */
    int zero = 0;
    struct exit_socks *xs = exit_socks_scratch.lookup(&zero);
    if (!xs)
        return 0;
    xs->found = 0;
    LOOP(EXIT_FDS, FIND_EXIT_SOCK); /* t is the table in spans it reads */
    u32 found = xs->found;
    /* One event for all of them (its sock: -1, the process had several). */
    struct lost_scratch *ls = lost_scratch.lookup(&zero);
    if (!ls)
        return 0;
    ls->n = 0;
    ls->count = 0;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < EXIT_SOCKS; i++) {
        if (i >= found)
            break;
        OPAQUE(i);
        u64 file = xs->files[i & (EXIT_SOCKS - 1)];
        collect_queued(file, unix_sk_of_file(file), ls);
    }
    emit_queued(ls, found == 1 ? xs->fds[0] : -1, SYS_EXIT);
    return 0;
}

/* --------------------------------------------------------- closed on exec */

static __always_inline void exec_enter(void)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    struct cloexec_rx *r = cloexec_rx.lookup(&tgid);
    if (!r)
        return;
    int zero = 0;
    struct exec_lost *x = exec_lost_scratch.lookup(&zero);
    const struct fd_table *t = current_fd_table_read();
    if (!x || !t)
        return;
    u32 n = 0;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < CLOEXEC_SLOTS; i++) {
        if (i >= r->n)
            break;
        OPAQUE(i);
        u32 k = i & (CLOEXEC_SLOTS - 1);
        u32 fl = 0;
        s32 fd = r->fds[k];
        u64 file = resolve_fd(t, fd, &fl);
        /* Still open, on the same file, still close-on-exec: exec closes it. */
        if (!file || file != r->files[k] || !(fl & FD_FLAG_CLOEXEC))
            continue;
        u32 j = n & (CLOEXEC_SLOTS - 1);
        x->files[j].fd = fd;
        x->files[j].fd_flags = fl;
        x->files[j].file = file;
        n++;
    }
    if (!n) {
        exec_losts.delete(&tgid);
        return;
    }
    fill_lost_files(FILL_EXEC, n);
    x->n = n;
    x->tid = (u32)id;
    bpf_get_current_comm(&x->comm, sizeof(x->comm));
    if (exec_losts.update(&tgid, x))
        count_lost(1);
}

/* Also attached to sys_enter_execveat (it reads no argument). */
TRACEPOINT_PROBE(syscalls, sys_enter_execve)
{
    exec_enter();
    return 0;
}

/* The exec succeeded: the close-on-exec fds kept at its entry are gone. */
TRACEPOINT_PROBE(sched, sched_process_exec)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    cloexec_rx.delete(&tgid);
    struct exec_lost *x = exec_losts.lookup(&tgid);
    if (!x)
        return 0;
    struct fd_event *ev = new_lost(LOST_CLOSED_ON_EXEC, SYS_EXECVE, -1);
    if (ev) {
        u32 n = x->n;
        if (n > CLOEXEC_SLOTS)
            n = CLOEXEC_SLOTS;
        u64 size = (u64)n * FILE_RECORD_SIZE;
        OPAQUE(size);
        if (size > sizeof(x->files))
            size = sizeof(x->files);
        if (size && bpf_probe_read_kernel(ev->files, size, x->files))
            n = 0;
        ev->nfds = n;
        ev->fds_seen = n;
        ev->tid = x->tid;
        __builtin_memcpy(ev->comm, x->comm, sizeof(ev->comm));
        submit(ev);
    }
    exec_losts.delete(&tgid);
    return 0;
}
