/* deliver.h - delivery policies decided in the kernel (roles/delivery.py).
 *
 * With SKIM_DELIVER = filter or latest the hardworker's program no longer hands every
 * segment to userspace. It keeps, per sensor flow, the next TCP sequence number it expects
 * and looks at each in-order segment exactly once:
 *
 *   seq == next   in order: evaluated, then next advances (only once any capture succeeded,
 *                 so a segment dropped for a full ring is evaluated again when it comes back);
 *   seq <  next   a retransmission of what was evaluated already: forwarded uncaptured (the
 *                 hardworker has what it needed of it); one that overlaps new data cannot be
 *                 split, so the flow falls back to full capture from its new part on;
 *   seq >  next   a segment behind a hole: dropped, the sensor's TCP sends it again after the
 *                 hole (the logger never ACKs it, so nothing is lost; recovery is by timeout).
 *
 * So a predicate sees each record once and in order, as the tcp baseline's userspace does,
 * and a deadband compares against the last record delivered: both modes deliver the same
 * records. An in-order segment that is exactly one record (the sensor sends one record per
 * send with TCP_NODELAY and an MSS of one record; magic and length checked here) is
 * evaluated: a match is captured whole (SKIM_KIND_RECORD), anything else is forwarded
 * uncaptured. A segment that is not one record (an odd MSS, a sensor writing in chunks)
 * switches its flow to full capture (SKIM_KIND_RAW, reassembled and filtered in userspace)
 * for the rest of the connection: correctness never depends on alignment.
 *
 * latest: an aligned record is copied into its sensor's mailbox slot (an mmapable array the
 * hardworker reads without system calls, under a per-slot sequence lock) and nothing is
 * queued; SYN/FIN/RST still go through the ring so userspace knows each stream's bounds.
 */
#ifndef SKIM_DELIVER_H
#define SKIM_DELIVER_H

#include "ring.h"  /* SKIM_KIND_* */

#define SKIM_DELIVER_ALL    0
#define SKIM_DELIVER_FILTER 1
#define SKIM_DELIVER_LATEST 2
#define SKIM_F_OUTSIDE  1
#define SKIM_F_DEADBAND 2
#define SKIM_F_EVERY    3

#ifndef SKIM_DELIVER
#define SKIM_DELIVER SKIM_DELIVER_ALL
#endif

#if SKIM_DELIVER != SKIM_DELIVER_ALL

#define SKIM_MAGIC 0x54534B52U  /* roles/record.py MAGIC */
#define SKIM_SLOTS 64           /* latest: mailbox slots, indexed by sensor id */

/* The record header and the signal as on the wire (roles/record.py), in 32-bit pieces:
 * seq and send_ns sit at offsets 12 and 20, which a u64 member would pad away. */
struct skim_rhdr {
	__be32 magic;
	__u8 version;
	__u8 flags;
	__be16 reserved;
	__be32 sensor_id;
	__be32 seq_hi, seq_lo;
	__be32 send_hi, send_lo;
	__be32 length;
	__be32 payload_crc;
	__be32 header_crc;
	__be32 signal;  /* first payload bytes: i32 */
};

struct skim_flow_key {
	__be32 saddr;
	__be16 sport;
	__u16 pad;
};

struct skim_flow {
	__u32 next_seq;   /* next TCP seq to evaluate */
	__u32 raw;        /* 1: full capture for the rest of the connection */
	__s32 last;       /* deadband: signal of the last record delivered */
	__u32 have_last;
};

BPF_TABLE("lru_hash", struct skim_flow_key, struct skim_flow, flows, 1024);

#if SKIM_DELIVER == SKIM_DELIVER_LATEST
/* One sensor's newest record. Writers (the one CPU that runs this flow's receive path)
 * bump `lock` to odd, copy, bump it to even; a reader that saw the same even value before
 * and after its copy has a consistent record. The bumps use the fetch form of the atomic
 * add (its result is consumed): BPF_FETCH is fully ordered on every JIT, the plain add is
 * not ordered on arm64. */
struct skim_slot {
	__u64 lock;
	__u64 updates;  /* records written into this slot */
	__u8 rec[SKIM_RECORD_LEN];
} __attribute__((aligned(8)));

BPF_F_TABLE("array", int, struct skim_slot, mailbox, SKIM_SLOTS, BPF_F_MMAPABLE);
#endif

/* bcc rewrites map calls (flows.lookup, ...) in the main file only: the code below reaches
 * its maps through these, defined in hardworker.c. */
static __always_inline struct skim_flow *skim_flow_lookup(struct skim_flow_key *k);
static __always_inline void skim_flow_set(struct skim_flow_key *k, struct skim_flow *v);
static __always_inline void skim_flow_delete(struct skim_flow_key *k);
#if SKIM_DELIVER == SKIM_DELIVER_LATEST
static __always_inline struct skim_slot *skim_slot_lookup(int *idx);
#endif

/* What to do with one matched segment of the skimmed stream. */
enum skim_act { ACT_FORWARD, ACT_CAPTURE, ACT_DROP };

struct skim_step {
	struct skim_flow *flow;  /* NULL: nothing to commit */
	__u32 next_seq;          /* committed after the capture succeeded */
	__s32 value;
	__u8 kind;               /* SKIM_KIND_* of the capture */
	__u8 set_last;
	__u8 set_raw;
	__u8 mailbox;            /* latest: copy the record into slot `sid` */
	__u32 sid;
	__u32 base;              /* the flow's frontier before this segment (userspace
				  * reassembly of a fallen-back flow starts there) */
	__u32 cap_seq;           /* seq and length the capture record reports */
	__u32 cap_len;           /* payload bytes to copy (0: flags only) */
};

static __always_inline int skim_match(struct skim_flow *fl, __u64 seq, __s32 v)
{
#if SKIM_FILTER == SKIM_F_OUTSIDE
	return v < SKIM_LO || v > SKIM_HI;
#elif SKIM_FILTER == SKIM_F_DEADBAND
	__s64 d = (__s64)v - fl->last;

	return !fl->have_last || d > SKIM_DEADBAND || d < -(__s64)SKIM_DEADBAND;
#elif SKIM_FILTER == SKIM_F_EVERY
	return seq % SKIM_EVERY == 0;
#else
	return 1;
#endif
}

/* An in-order segment of `plen` payload bytes at packet offset `off`: one aligned record
 * (returns 1 and fills the step), or not (returns 0: the flow falls back to full capture). */
static __always_inline int skim_record(struct xdp_md *ctx, __u32 off, __u32 plen,
				       struct skim_flow *fl, struct skim_step *st)
{
	struct skim_rhdr h;
	__u64 seq;

	if (plen != SKIM_RECORD_LEN || bpf_xdp_load_bytes(ctx, off, &h, sizeof(h)) < 0)
		return 0;
	if (h.magic != skim_htonl(SKIM_MAGIC) || skim_ntohl(h.length) != SKIM_RECORD_LEN - 40)
		return 0;
	seq = ((__u64)skim_ntohl(h.seq_hi) << 32) | skim_ntohl(h.seq_lo);
	st->value = (__s32)skim_ntohl(h.signal);
	st->sid = skim_ntohl(h.sensor_id);
#if SKIM_DELIVER == SKIM_DELIVER_LATEST
	if (st->sid >= SKIM_SLOTS)
		return 0;
	st->mailbox = 1;
#else
	if (skim_match(fl, seq, st->value)) {
		st->kind = SKIM_KIND_RECORD;
		st->cap_len = plen;
		st->set_last = 1;
	}
#endif
	return 1;
}

/* Decide what a segment of the skimmed stream needs. Flags-only captures (SYN, FIN, RST,
 * and FIN after an uncaptured record) report the seq the flag sits at. */
static __always_inline enum skim_act skim_policy(struct xdp_md *ctx, struct iphdr *iph,
						 struct tcphdr *tcph, __u32 off, __u32 plen,
						 __u8 flags, struct skim_step *st)
{
	struct skim_flow_key key = { .saddr = iph->saddr, .sport = tcph->source };
	__u32 seq = skim_ntohl(tcph->seq);
	struct skim_flow *fl;
	__s32 ahead;

	st->cap_seq = seq;
	st->base = seq;
	if (flags & SKIM_RST) {
		skim_flow_delete(&key);
		return ACT_CAPTURE;  /* flags only: the stream ends here */
	}
	if (flags & SKIM_SYN) {
		struct skim_flow init = { .next_seq = seq + 1 };

		skim_flow_set(&key, &init);
		return ACT_CAPTURE;
	}
	fl = skim_flow_lookup(&key);
	if (!fl)
		return ACT_DROP;  /* no SYN seen: cannot know where records start */
	st->base = fl->next_seq;
	ahead = (__s32)(seq - fl->next_seq);
	if (ahead > 0)
		return ACT_DROP;  /* behind a hole: comes again in order */
	if (ahead < 0) {
		if ((__s32)(seq + plen - fl->next_seq) <= 0 && !(flags & SKIM_FIN))
			return ACT_FORWARD;  /* evaluated already */
		/* overlaps new data (or a FIN): cannot be split, capture it all from here on */
		st->flow = fl;
		st->set_raw = 1;
		st->kind = SKIM_KIND_RAW;
		st->cap_len = plen;
		st->next_seq = seq + plen + !!(flags & SKIM_FIN);
		return ACT_CAPTURE;
	}
	st->flow = fl;
	st->next_seq = seq + plen + !!(flags & SKIM_FIN);
	if (plen == 0)
		return (flags & SKIM_FIN) ? ACT_CAPTURE : ACT_FORWARD;
	if (fl->raw || !skim_record(ctx, off, plen, fl, st)) {
		st->set_raw = 1;
		st->kind = SKIM_KIND_RAW;
		st->cap_len = plen;
		return ACT_CAPTURE;
	}
	if (st->kind == SKIM_KIND_RECORD)
		return ACT_CAPTURE;
	if (flags & SKIM_FIN) {  /* an uncaptured record, then the end: report the FIN alone */
		st->cap_seq = seq + plen;
		return ACT_CAPTURE;
	}
	return ACT_FORWARD;
}

#if SKIM_DELIVER == SKIM_DELIVER_LATEST
static __always_inline int skim_mailbox_put(struct xdp_md *ctx, __u32 off, __u32 sid)
{
	int idx = sid;
	struct skim_slot *s = skim_slot_lookup(&idx);
	__u64 v;
	long err;

	if (!s)
		return -1;
	v = __sync_fetch_and_add(&s->lock, 1);  /* odd: write in progress */
	asm volatile("" : : "r"(v));            /* keep the fetch form (see struct skim_slot) */
	err = bpf_xdp_load_bytes(ctx, off, s->rec, SKIM_RECORD_LEN);
	s->updates += 1;
	v = __sync_fetch_and_add(&s->lock, 1);  /* even: consistent again */
	asm volatile("" : : "r"(v));
	return err;
}
#endif

/* After a successful capture (or none needed): the flow's state moves on. */
static __always_inline void skim_commit(struct skim_step *st)
{
	struct skim_flow *fl = st->flow;

	if (!fl)
		return;
	fl->next_seq = st->next_seq;
	if (st->set_raw)
		fl->raw = 1;
	if (st->set_last) {
		fl->last = st->value;
		fl->have_last = 1;
	}
}

#endif /* SKIM_DELIVER != SKIM_DELIVER_ALL */
#endif /* SKIM_DELIVER_H */
