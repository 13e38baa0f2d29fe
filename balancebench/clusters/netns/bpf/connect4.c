// SPDX-License-Identifier: GPL-2.0
// Socket load balancing as Cilium's kube-proxy replacement does it (bpf/bpf_sock.c): at connect() to a
// Service address, pick one backend uniformly at random and rewrite the socket's destination. Every packet of
// the connection then goes straight to the pod: no per-packet NAT, no conntrack entry for the Service.
//
// Maps (pinned by the netns cluster under its private bpffs, updated with `bpftool map update`):
//   bb_services  (ip, port) of a Service address, network byte order -> {count, base}
//   bb_backends  slot -> (ip, port); a service's backends are slots base .. base+count-1.
// The supervisor writes a new backend list into the half of bb_backends the service does not use, then
// switches {count, base} with one map update, so a connect() never sees a half-written list.
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#define BB_MAX_BACKENDS 4096

struct bb_service_key {
	__u32 ip;
	__u16 port;
	__u16 pad;
};

struct bb_service {
	__u32 count;
	__u32 base;
};

struct bb_backend {
	__u32 ip;
	__u16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct bb_service_key);
	__type(value, struct bb_service);
} bb_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * BB_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct bb_backend);
} bb_backends SEC(".maps");

SEC("cgroup/connect4")
int bb_connect4(struct bpf_sock_addr *ctx)
{
	struct bb_service_key key = {};
	struct bb_service *svc;
	struct bb_backend *backend;
	__u32 slot;

	if (ctx->protocol != IPPROTO_TCP)
		return 1;
	key.ip = ctx->user_ip4;
	key.port = (__u16)ctx->user_port;
	svc = bpf_map_lookup_elem(&bb_services, &key);
	if (!svc)
		return 1;
	// A Service without ready endpoints refuses the connection, as kube-proxy's REJECT rule does.
	if (svc->count == 0 || svc->count > BB_MAX_BACKENDS)
		return 0;
	slot = svc->base + bpf_get_prandom_u32() % svc->count;
	backend = bpf_map_lookup_elem(&bb_backends, &slot);
	if (!backend || backend->ip == 0)
		return 0;
	ctx->user_ip4 = backend->ip;
	ctx->user_port = backend->port;
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
