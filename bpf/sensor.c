/* sensor.c - XDP on the sensor's ingress: make the logger's replies look like
 * the hardworker's.
 *
 * The logger is the TCP endpoint on the hardworker's behalf; its segments
 * (LOGGER_IP:SKIM_PORT -> SENSOR_IP) get saddr -> HW_IP and eth src -> HW_MAC,
 * checksums updated, XDP_PASS, so the sensor's socket (connected to HW_IP)
 * accepts them. Everything else passes untouched.
 *
 * Constants (-D): SKIM_PORT, SENSOR_IP, HW_IP, LOGGER_IP (host-order ints).
 * HW_MAC is read per packet from `skim_addrs` slot 0, kept current by the
 * guard when the hardworker's MAC changes.
 */
#include "skim.h"
#include "csum.h"

/* Counting rule, as in ring.h: every frame ends in exactly one OUTCOME counter, counted by
 * verdict() where the program returns, so the outcome counters sum to the frames seen.
 * This program has no EVENT counters. Each enumerator's comment starts with its class
 * (tests/test_layout.py checks it against vocab.SENSOR_OUTCOMES / SENSOR_EVENTS). */
enum skim_counter {
	C_REWRITTEN = 0,  /* outcome: a logger reply made the hardworker's: XDP_PASS */
	C_PASSED,         /* outcome: anything else: XDP_PASS, untouched */
	C_MALFORMED,      /* outcome: truncated or bogus headers: XDP_PASS, untouched */
	C_MAX,
};

BPF_PERCPU_ARRAY(counters, __u64, C_MAX);
BPF_ARRAY(skim_addrs, struct skim_addr, 1);

/* bcc rewrites map calls only outside macros, hence a function */
static __always_inline void count(__u32 idx)
{
	__u64 *v = counters.lookup(&idx);

	if (v)
		*v += 1;
}

/* Every frame ends in `return verdict(OUTCOME, ACTION)`: its one outcome, then its action. */
static __always_inline int verdict(__u32 outcome, int action)
{
	count(outcome);
	return action;
}

int xdp_sensor(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	__u32 slot_hw = 0;
	struct skim_addr *hw;
	struct hdr_cursor nh = { .pos = data };
	struct ethhdr *eth;
	struct iphdr *iph;
	struct tcphdr *tcph;
	int proto;

	if (parse_ethhdr(&nh, data_end, &eth) < 0)
		return verdict(C_MALFORMED, XDP_PASS);
	if (eth->h_proto != skim_htons(ETH_P_IP))
		return verdict(C_PASSED, XDP_PASS);
	proto = parse_iphdr(&nh, data_end, &iph);
	if (proto < 0)
		return verdict(C_MALFORMED, XDP_PASS);
	if (proto != IPPROTO_TCP || iph->saddr != skim_htonl(LOGGER_IP) ||
	    iph->daddr != skim_htonl(SENSOR_IP))
		return verdict(C_PASSED, XDP_PASS);
	/* non-first fragments have no TCP header: leave them alone */
	if (iph->frag_off & skim_htons(SKIM_IP_MF | SKIM_IP_OFFSET))
		return verdict(C_PASSED, XDP_PASS);
	if (parse_tcphdr(&nh, data_end, &tcph) < 0)
		return verdict(C_MALFORMED, XDP_PASS);
	if (tcph->source != skim_htons(SKIM_PORT))
		return verdict(C_PASSED, XDP_PASS);

	hw = skim_addrs.lookup(&slot_hw);
	if (!hw)
		return verdict(C_MALFORMED, XDP_PASS);
	__builtin_memcpy(eth->h_source, hw->mac, ETH_ALEN);
	ipv4_tcp_set_addr(iph, tcph, &iph->saddr, skim_htonl(HW_IP));
	return verdict(C_REWRITTEN, XDP_PASS);
}
