/*
 * Walking a msghdr's control data: every cmsghdr (not only the first) and
 * every SCM_RIGHTS fd number in it.  User memory is read with
 * bpf_probe_read_user(); the kprobe and fentry backends walk the kernel's
 * copy of the control data with bpf_probe_read_kernel().
 */

static __always_inline int read_mem(void *dst, u32 size, u64 src, int user)
{
    if (user)
        return probe_read_user(dst, size, (void *)src);
    return bpf_probe_read_kernel(dst, size, (void *)src);
}

/* msg_control, msg_controllen and msg_flags of a user msghdr, in one read. */
static __always_inline void read_user_msghdr(u64 hdr, u64 *control, u64 *controllen,
                                             u32 *msg_flags)
{
    u8 buf[USER_MSGHDR_SPAN_LEN] = {};
    probe_read_user(buf, sizeof(buf), (void *)(hdr + USER_MSGHDR_CONTROL));
    __builtin_memcpy(control, buf, sizeof(*control));
    __builtin_memcpy(controllen, buf + (USER_MSGHDR_CONTROLLEN - USER_MSGHDR_CONTROL),
                     sizeof(*controllen));
    __builtin_memcpy(msg_flags, buf + (USER_MSGHDR_FLAGS - USER_MSGHDR_CONTROL),
                     sizeof(*msg_flags));
}

/* read_user_msghdr(), and in the same user read the first CMSG_LEN_ONE_FD
 * bytes of the control buffer when it lies near the msghdr (C programs keep
 * both on the stack): the window read is bounded by the msghdr's own page,
 * so it cannot fault where the exact read would not.  Returns 1 when
 * s->chunk holds those control bytes, 0 when they must be read apart. */
static __always_inline int read_user_msghdr_near(struct fd_scratch *s, u64 hdr, u64 *control,
                                                 u64 *controllen, u32 *msg_flags)
{
    u64 at = hdr + USER_MSGHDR_CONTROL;
    u64 page = at & ~(u64)(USER_PAGE_SIZE - 1);
    u64 lo = at - USER_WINDOW_BEFORE;
    if (at < USER_WINDOW_BEFORE || lo < page)
        lo = page;
    u64 hi = lo + USER_WINDOW_LEN;
    if (hi > page + USER_PAGE_SIZE)
        hi = page + USER_PAGE_SIZE;
    if (at + USER_MSGHDR_SPAN_LEN > hi) {
        read_user_msghdr(hdr, control, controllen, msg_flags);
        return 0;
    }
    u32 len = (u32)(hi - lo);
    OPAQUE(len);
    len &= 2 * USER_WINDOW_LEN - 1;
    if (probe_read_user(s->window, len, (void *)lo)) {
        read_user_msghdr(hdr, control, controllen, msg_flags);
        return 0;
    }
    u32 o = (u32)(at - lo);
    OPAQUE(o);
    o &= USER_WINDOW_LEN - 1;
    __builtin_memcpy(control, s->window + o, sizeof(*control));
    __builtin_memcpy(controllen, s->window + o + (USER_MSGHDR_CONTROLLEN - USER_MSGHDR_CONTROL),
                     sizeof(*controllen));
    __builtin_memcpy(msg_flags, s->window + o + (USER_MSGHDR_FLAGS - USER_MSGHDR_CONTROL),
                     sizeof(*msg_flags));
    u64 c = *control;
    /* hi >= at + USER_MSGHDR_SPAN_LEN: no wrap-around either way. */
    if (c < lo || c > hi - CMSG_LEN_ONE_FD)
        return 0;
    u32 co = (u32)(c - lo);
    OPAQUE(co);
    co &= USER_WINDOW_LEN - 1;
    __builtin_memcpy(s->chunk, s->window + co, CMSG_LEN_ONE_FD);
    return 1;
}

/* Where a walk of user control data stands, between two bpf_loop() steps. */
struct cmsg_walk {
    u64 control;
    u64 controllen;
    u64 off;
    u32 n;
    u32 total;
};
BPF_PERCPU_ARRAY(cmsg_walks, struct cmsg_walk, 1);

/* One cmsghdr of the walk in cmsg_walks, its SCM_RIGHTS fds into fd_scratch;
 * 1 (stop) at the end of the control data or at a malformed header. */
long loop__walk_user_cmsg(u64 c)
{
    int zero = 0;
    struct cmsg_walk *w = cmsg_walks.lookup(&zero);
    struct fd_scratch *s = fd_scratch.lookup(&zero);
    if (!w || !s)
        return 1;
    struct { u64 len; s32 level; s32 type; } h = {};
    u64 off = w->off;
    if (off + CMSG_HDR_SIZE > w->controllen)
        return 1;
    if (probe_read_user(&h, sizeof(h), (void *)(w->control + off)))
        return 1;
    /* The kernel's CMSG_OK(): a whole header, not past the buffer. */
    if (h.len < CMSG_HDR_SIZE || h.len > w->controllen - off)
        return 1;
    if (h.level == SOL_SOCKET && h.type == SCM_RIGHTS) {
        u32 cnt = (h.len - CMSG_HDR_LEN) / FD_BYTES;
        u32 n = w->n;
        w->total += cnt;
        if (n < FD_SLOTS && cnt) {
            u32 room = FD_SLOTS - n;
            if (cnt > room)
                cnt = room;
            u32 idx = n;
            OPAQUE(idx);
            idx &= FD_INDEX_MASK;
            u32 bytes = (cnt * FD_BYTES) & FD_READ_MASK;
            probe_read_user(&s->fds[idx], bytes, (void *)(w->control + off + CMSG_HDR_LEN));
            w->n = n + cnt;
        }
    }
    w->off = off + ((h.len + CMSG_ALIGN_MASK) & ~(u64)CMSG_ALIGN_MASK);
    return 0;
}

/* SCM_RIGHTS fd numbers of one control buffer into s (fd_scratch); returns how
 * many were stored (at most FD_SLOTS); *seen gets how many the messages
 * declared.  User control data is walked by bpf_loop() (its step verified
 * once); the kernel's copy (kprobe, fentry: fentry programs cannot be linked
 * with callbacks here) by a bounded loop. */
static __always_inline u32 collect_fds(struct fd_scratch *s, u64 control, u64 controllen,
                                       int user, u32 *seen)
{
    u64 off = 0;
    u32 n = 0, total = 0;
    *seen = 0;
    if (!control)
        return 0;
    if (user) {
        int zero = 0;
        struct cmsg_walk *w = cmsg_walks.lookup(&zero);
        if (!w)
            return 0;
        w->control = control;
        w->controllen = controllen;
        w->off = 0;
        w->n = 0;
        w->total = 0;
        LOOP(MAX_CMSGS, WALK_USER_CMSG);
        n = w->n;
        if (n > FD_SLOTS)
            n = FD_SLOTS;
        *seen = w->total;
        return n;
    }
#pragma clang loop unroll(disable)
    for (int c = 0; c < MAX_CMSGS; c++) {
        struct { u64 len; s32 level; s32 type; } h = {};
        if (off + CMSG_HDR_SIZE > controllen)
            break;
        if (read_mem(&h, sizeof(h), control + off, user))
            break;
        /* The kernel's CMSG_OK(): a whole header, not past the buffer. */
        if (h.len < CMSG_HDR_SIZE || h.len > controllen - off)
            break;
        if (h.level == SOL_SOCKET && h.type == SCM_RIGHTS) {
            u32 cnt = (h.len - CMSG_HDR_LEN) / FD_BYTES;
            total += cnt;
            if (n < FD_SLOTS && cnt) {
                u32 room = FD_SLOTS - n;
                if (cnt > room)
                    cnt = room;
                u32 idx = n;
                OPAQUE(idx);
                idx &= FD_INDEX_MASK;
                u32 bytes = (cnt * FD_BYTES) & FD_READ_MASK;
                read_mem(&s->fds[idx], bytes, control + off + CMSG_HDR_LEN, user);
                n += cnt;
            }
        }
        off += (h.len + CMSG_ALIGN_MASK) & ~(u64)CMSG_ALIGN_MASK;
    }
    *seen = total;
    return n;
}

/* The usual message, one SCM_RIGHTS header with one fd and nothing after it,
 * in one read instead of two: 1 if it was that (the fd is then s->fds[0]). */
static __always_inline int collect_single_fd(struct fd_scratch *s, u64 control, u64 controllen,
                                             int user, int have_chunk)
{
    u64 len = 0;
    s32 level = 0, type = 0;
    if (!control || controllen < CMSG_LEN_ONE_FD || controllen > CMSG_SPACE_ONE_FD)
        return 0;
    if (!have_chunk && read_mem(s->chunk, sizeof(s->chunk), control, user))
        return 0;
    __builtin_memcpy(&len, s->chunk, sizeof(len));
    __builtin_memcpy(&level, s->chunk + sizeof(len), sizeof(level));
    __builtin_memcpy(&type, s->chunk + sizeof(len) + sizeof(level), sizeof(type));
    if (len != CMSG_LEN_ONE_FD || level != SOL_SOCKET || type != SCM_RIGHTS)
        return 0;
    __builtin_memcpy(&s->fds[0], s->chunk + CMSG_HDR_LEN, FD_BYTES);
    return 1;
}
