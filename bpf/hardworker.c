/* hardworker.c - XDP on the hardworker: skim the sensor's TCP stream.
 *
 * A segment to HW_IP:SKIM_PORT carrying the TOS marker is copied (addresses,
 * port, seq, flags, payload) into the ring buffer `events`, then redirected to
 * the logger: eth dst -> LOGGER_MAC, eth src -> HW_MAC, ip dst -> LOGGER_IP,
 * checksums updated, XDP_TX. The hardworker's own TCP stack never sees it.
 *
 * No ACK without capture: what cannot be captured (ring full, larger than
 * SKIM_CAPTURE) is dropped, so the logger never ACKs it and the sensor's TCP
 * retransmits. Everything else passes untouched.
 *
 * The MACs are not constants: they are read per packet from `skim_addrs`
 * (slot 0 = the hardworker, eth src; slot 1 = the logger, eth dst), kept
 * current by the guard when a MAC changes.
 *
 * Compile-time constants (-D, validated by roles/xdp.py):
 *   SKIM_TOS, SKIM_PORT          DSCP marker byte (ECN bits ignored), TCP port
 *   HW_IP, LOGGER_IP             IPv4 addresses as host-order integers
 *   SKIM_CAPTURE                 max payload bytes per segment
 *   SKIM_RINGBUF_PAGES           ring buffer size in pages
 *   SKIM_WAKEUP                  0 (wake-up per record) or BPF_RB_NO_WAKEUP (1)
 *   SKIM_WAKE_RECORDS            optional (coalesce): force a wake-up for every this
 *                                many records, none for the others
 */
#include "skim.h"
#include "csum.h"
#include "ring.h"     /* struct skim_rec, enum skim_counter: shared with roles/vocab.py */
#include "deliver.h"

BPF_RINGBUF_OUTPUT(events, SKIM_RINGBUF_PAGES);
BPF_PERCPU_ARRAY(counters, __u64, C_MAX);
BPF_ARRAY(skim_addrs, struct skim_addr, 2);

/* Counting (the rule is in ring.h): every frame ends in `return verdict(OUTCOME, ACTION)`,
 * the only place an outcome counter is counted, so each frame counts exactly one outcome.
 * Helpers that may end a frame do not count it: they return its outcome, C_FORWARDED
 * meaning "go on and forward it". Events (matched, captured, uncaptured, mailbox) are
 * counted with count() where they happen. */

/* bcc rewrites map calls only outside macros, hence a function */
static __always_inline void count(__u32 idx)
{
	__u64 *v = counters.lookup(&idx);

	if (v)
		*v += 1;
}

static __always_inline int verdict(__u32 outcome, int action)
{
	count(outcome);
	return action;
}

#if SKIM_DELIVER != SKIM_DELIVER_ALL
static __always_inline struct skim_flow *skim_flow_lookup(struct skim_flow_key *k)
{
	return flows.lookup(k);
}

static __always_inline void skim_flow_set(struct skim_flow_key *k, struct skim_flow *v)
{
	flows.update(k, v);
}

static __always_inline void skim_flow_delete(struct skim_flow_key *k)
{
	flows.delete(k);
}
#endif
#if SKIM_DELIVER == SKIM_DELIVER_LATEST
static __always_inline struct skim_slot *skim_slot_lookup(int *idx)
{
	return mailbox.lookup(idx);
}
#endif

#ifdef SKIM_WAKE_RECORDS
BPF_ARRAY(wake_count, __u64, 1);

/* coalesce: the submit flag for the record just reserved: a forced wake-up for every
 * SKIM_WAKE_RECORDS-th record, none for the others (one irq_work self-IPI per N records).
 * A running count, not bpf_ringbuf_query(BPF_RB_AVAIL_DATA): bcc 0.26 has no table method
 * for that helper and does not rewrite `&events` into a map pointer (the verifier sees a
 * scalar). Records a consumer drained on its timeout still count towards the next wake-up,
 * which then comes early; the timeout bounds every record's wait either way. */
static __always_inline __u64 wake_flag(void)
{
	int zero = 0;
	__u64 *n = wake_count.lookup(&zero);

	if (!n)
		return BPF_RB_FORCE_WAKEUP;
	if ((__sync_fetch_and_add(n, 1) + 1) % SKIM_WAKE_RECORDS == 0)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}
#endif

/* Copy a segment's addresses, seq, flags and `plen` payload bytes (at packet offset `off`)
 * into the ring. Returns C_FORWARDED once captured, or the outcome the segment is dropped
 * with (ring full, bad length): no ACK without capture. */
static __always_inline __u32 capture(struct xdp_md *ctx, struct iphdr *iph, struct tcphdr *tcph,
				     __u8 flags, __u8 kind, __u32 seq, __u32 base, __u32 off,
				     __u32 plen)
{
	struct skim_rec *rec;

	rec = events.ringbuf_reserve(sizeof(struct skim_rec));
	if (!rec)
		return C_DROPPED_FULL;
	rec->saddr = iph->saddr;
	rec->sport = skim_ntohs(tcph->source);
	rec->flags = flags;
	rec->kind = kind;
	rec->seq = seq;
	rec->base = base;
	rec->len = plen;
	/* The verifier needs 0 < len <= sizeof(data) on the very register passed
	 * to the helper. clang re-derives checked values from copies, and fuses
	 * `n == 0 || n > CAP` into one unsigned range compare (n - 1 > CAP - 1)
	 * on a copy the 6.1 verifier cannot link back to n. So: pin n with an
	 * empty asm, then two separate signed checks with a barrier between
	 * them, each bounding the register that reaches the helper. */
	if (plen > 0) {
		__s64 n = plen;
		long err = -1;

		asm volatile("" : "+r"(n));
		if (n > 0) {
			asm volatile("" : "+r"(n));
			if (n <= SKIM_CAPTURE)
				err = bpf_xdp_load_bytes(ctx, off, rec->data, n);
		}
		if (err < 0) {
			events.ringbuf_discard(rec, 0);
			return C_MALFORMED;
		}
	}
#ifdef SKIM_WAKE_RECORDS
	events.ringbuf_submit(rec, wake_flag());
#else
	events.ringbuf_submit(rec, SKIM_WAKEUP);
#endif
	count(C_CAPTURED);
	return C_FORWARDED;
}

#if SKIM_DELIVER == SKIM_DELIVER_ALL
/* Every segment goes to the ring, except pure ACKs: they carry nothing for the
 * reassembler and are forwarded without a record. Returns the outcome so far. */
static __always_inline __u32 deliver(struct xdp_md *ctx, struct iphdr *iph, struct tcphdr *tcph,
				     __u32 off, __u32 plen)
{
	__u8 flags = tcp_flags(tcph);

	if (plen == 0 && !(flags & (SKIM_SYN | SKIM_FIN | SKIM_RST)))
		return C_FORWARDED;
	return capture(ctx, iph, tcph, flags, SKIM_KIND_RAW, skim_ntohl(tcph->seq), 0, off, plen);
}
#else
/* filter/latest (deliver.h): the policy decides; the flow's state moves on only once
 * whatever it asked for (capture, mailbox) succeeded. Returns the outcome so far. */
static __always_inline __u32 deliver(struct xdp_md *ctx, struct iphdr *iph, struct tcphdr *tcph,
				     __u32 off, __u32 plen)
{
	__u8 flags = tcp_flags(tcph);
	struct skim_step st = {};
	enum skim_act act = skim_policy(ctx, iph, tcph, off, plen, flags, &st);

	if (act == ACT_DROP)
		return C_DROPPED_ORDER;
	if (act == ACT_CAPTURE) {
		__u32 outcome = capture(ctx, iph, tcph, flags, st.kind, st.cap_seq, st.base, off,
					st.cap_len);

		if (outcome != C_FORWARDED)
			return outcome;
	}
#if SKIM_DELIVER == SKIM_DELIVER_LATEST
	if (st.mailbox) {
		if (skim_mailbox_put(ctx, off, st.sid) < 0)
			return C_MALFORMED;
		count(C_MAILBOX);
	}
#endif
	skim_commit(&st);
	if (act == ACT_FORWARD && plen)
		count(C_UNCAPTURED);
	return C_FORWARDED;
}
#endif

/* To the logger: eth dst -> LOGGER_MAC, eth src -> HW_MAC, ip dst -> LOGGER_IP. */
static __always_inline int forward(struct xdp_md *ctx, struct iphdr *iph, struct tcphdr *tcph,
				   struct skim_addr *hw, struct skim_addr *logger)
{
	/* The load helper does not invalidate packet pointers, but re-check the
	 * headers we write through to keep the verifier's proof local. */
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = (void *)(long)ctx->data;

	if ((void *)(eth + 1) > data_end)
		return verdict(C_MALFORMED, XDP_DROP);
	__builtin_memcpy(eth->h_dest, logger->mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, hw->mac, ETH_ALEN);
	ipv4_tcp_set_addr(iph, tcph, &iph->daddr, skim_htonl(LOGGER_IP));
	return verdict(C_FORWARDED, XDP_TX);
}

int xdp_hardworker(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	__u32 slot_hw = 0, slot_logger = 1;
	struct skim_addr *hw, *logger;
	struct hdr_cursor nh = { .pos = data };
	struct ethhdr *eth;
	struct iphdr *iph;
	struct tcphdr *tcph;
	int tcplen, ipproto;
	__u32 plen, outcome;

	if (parse_ethhdr(&nh, data_end, &eth) < 0)
		return verdict(C_MALFORMED, XDP_PASS);
	if (eth->h_proto != skim_htons(ETH_P_IP))
		return verdict(C_PASSED, XDP_PASS);
	ipproto = parse_iphdr(&nh, data_end, &iph);
	if (ipproto < 0)
		return verdict(C_MALFORMED, XDP_PASS);
	if (ipproto != IPPROTO_TCP || iph->daddr != skim_htonl(HW_IP) ||
	    (iph->tos & 0xfc) != SKIM_TOS)
		return verdict(C_PASSED, XDP_PASS);
	/* A fragment of the marked stream: a non-first fragment has no ports to
	 * match, passing it would make our own stack reassemble it and answer with
	 * a RST, forwarding it uncaptured would break "no ACK without capture".
	 * The sensor's TCP sets DF, so this is anomalous: drop and count. */
	if (iph->frag_off & skim_htons(SKIM_IP_MF | SKIM_IP_OFFSET))
		return verdict(C_FRAGMENTS, XDP_DROP);
	tcplen = parse_tcphdr(&nh, data_end, &tcph);
	if (tcplen < 0)
		return verdict(C_MALFORMED, XDP_PASS);
	if (tcph->dest != skim_htons(SKIM_PORT))
		return verdict(C_PASSED, XDP_PASS);

	count(C_MATCHED);
	/* Looked up before anything is captured: a segment that cannot be
	 * forwarded must not be captured either (array lookups never fail). */
	hw = skim_addrs.lookup(&slot_hw);
	logger = skim_addrs.lookup(&slot_logger);
	if (!hw || !logger)
		return verdict(C_MALFORMED, XDP_DROP);
	{
		__u32 tot = skim_ntohs(iph->tot_len);
		__u32 hdrs = iph->ihl * 4 + tcplen;

		/* Kernel 6.1's verifier loses the bounds of a byte-swapped value
		 * (the swap is opaque to it): pin the value, then re-bound it with
		 * a mask it can track. Newer verifiers accept either shape. */
		asm volatile("" : "+r"(tot));
		tot &= 0xffff;

		/* lies about its length: never forward it */
		if (tot < hdrs || data + sizeof(*eth) + tot > data_end)
			return verdict(C_MALFORMED, XDP_DROP);
		plen = tot - hdrs;
	}
	if (plen > SKIM_CAPTURE)
		return verdict(C_DROPPED_OVERSIZE, XDP_DROP);
	outcome = deliver(ctx, iph, tcph, nh.pos - data, plen);
	if (outcome != C_FORWARDED)
		return verdict(outcome, XDP_DROP);
	return forward(ctx, iph, tcph, hw, logger);
}
