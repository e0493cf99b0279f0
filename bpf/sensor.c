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

enum skim_counter {
	C_REWRITTEN = 0,
	C_PASSED,
	C_MALFORMED,
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
		goto malformed;
	if (eth->h_proto != skim_htons(ETH_P_IP))
		goto pass;
	proto = parse_iphdr(&nh, data_end, &iph);
	if (proto < 0)
		goto malformed;
	if (proto != IPPROTO_TCP || iph->saddr != skim_htonl(LOGGER_IP) ||
	    iph->daddr != skim_htonl(SENSOR_IP))
		goto pass;
	/* non-first fragments have no TCP header: leave them alone */
	if (iph->frag_off & skim_htons(SKIM_IP_MF | SKIM_IP_OFFSET))
		goto pass;
	if (parse_tcphdr(&nh, data_end, &tcph) < 0)
		goto malformed;
	if (tcph->source != skim_htons(SKIM_PORT))
		goto pass;

	hw = skim_addrs.lookup(&slot_hw);
	if (!hw)
		goto malformed;
	__builtin_memcpy(eth->h_source, hw->mac, ETH_ALEN);
	ipv4_tcp_set_addr(iph, tcph, &iph->saddr, skim_htonl(HW_IP));
	count(C_REWRITTEN);
	return XDP_PASS;

malformed:
	count(C_MALFORMED);
pass:
	count(C_PASSED);
	return XDP_PASS;
}
