/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"
#include "util/macro.h"
#include "util/string-table.h"

static const char *const kind_table[_RESOURCE_KIND_MAX] = {
        [RESOURCE_LINK_TAP] = "tap",
        [RESOURCE_LINK_BRIDGE] = "bridge",
        [RESOURCE_NFT_TABLES] = "nft-tables",
        [RESOURCE_NFT_PORTFWD] = "nft-portfwd",
        [RESOURCE_NFT_VM_PORT] = "nft-vm-port",
        [RESOURCE_NFT_VM_ADDR] = "nft-vm-addr",
};

DEFINE_STRING_TABLE(resource_kind, ResourceKind, kind_table, _RESOURCE_KIND_MAX)

bool resource_kind_is_link(ResourceKind k) {
        return k == RESOURCE_LINK_TAP || k == RESOURCE_LINK_BRIDGE;
}

bool resource_kind_is_elem(ResourceKind k) {
        return k == RESOURCE_NFT_PORTFWD || k == RESOURCE_NFT_VM_PORT || k == RESOURCE_NFT_VM_ADDR;
}

int resource_set_add(ResourceSet *s, const Resource *r) {
        if (s->n == s->allocated) {
                size_t a = s->allocated ? s->allocated * 2 : 16;
                Resource *p = realloc(s->items, a * sizeof(Resource));
                if (!p)
                        return -ENOMEM;
                s->items = p;
                s->allocated = a;
        }
        s->items[s->n++] = *r;
        return 0;
}

void resource_set_clear(ResourceSet *s) {
        free(s->items);
        *s = (ResourceSet){};
}

size_t resource_key_encode(const Resource *r, uint8_t *buf, size_t size) {
        const ResourceElem *e = &r->elem;
        size_t n = strnlen(e->ifname, sizeof(e->ifname) - 1);

        switch (r->kind) {
        case RESOURCE_NFT_PORTFWD:
                if (size < 9)
                        return 0;
                buf[0] = e->proto;
                buf[1] = (uint8_t) (e->host_port >> 8), buf[2] = (uint8_t) e->host_port;
                buf[3] = (uint8_t) (e->guest_ip >> 24), buf[4] = (uint8_t) (e->guest_ip >> 16);
                buf[5] = (uint8_t) (e->guest_ip >> 8), buf[6] = (uint8_t) e->guest_ip;
                buf[7] = (uint8_t) (e->guest_port >> 8), buf[8] = (uint8_t) e->guest_port;
                return 9;
        case RESOURCE_NFT_VM_PORT:
                if (size < n)
                        return 0;
                memcpy(buf, e->ifname, n);
                return n;
        case RESOURCE_NFT_VM_ADDR:
                if (size < 10 + n)
                        return 0;
                memcpy(buf, e->mac, 6);
                buf[6] = (uint8_t) (e->guest_ip >> 24), buf[7] = (uint8_t) (e->guest_ip >> 16);
                buf[8] = (uint8_t) (e->guest_ip >> 8), buf[9] = (uint8_t) e->guest_ip;
                memcpy(buf + 10, e->ifname, n);
                return 10 + n;
        default:
                return 0;
        }
}

int resource_key_decode(ResourceKind kind, const void *key, size_t size, ResourceElem *ret) {
        const uint8_t *b = key;
        ResourceElem e = {};

        switch (kind) {
        case RESOURCE_NFT_PORTFWD:
                if (size != 9)
                        return -EBADMSG;
                e.proto = b[0];
                e.host_port = (uint16_t) (b[1] << 8 | b[2]);
                e.guest_ip = (uint32_t) b[3] << 24 | (uint32_t) b[4] << 16 | (uint32_t) b[5] << 8 | b[6];
                e.guest_port = (uint16_t) (b[7] << 8 | b[8]);
                break;
        case RESOURCE_NFT_VM_PORT:
                if (size == 0 || size > 15)
                        return -EBADMSG;
                memcpy(e.ifname, b, size);
                break;
        case RESOURCE_NFT_VM_ADDR:
                if (size <= 10 || size > 25)
                        return -EBADMSG;
                memcpy(e.mac, b, 6);
                e.guest_ip = (uint32_t) b[6] << 24 | (uint32_t) b[7] << 16 | (uint32_t) b[8] << 8 | b[9];
                memcpy(e.ifname, b + 10, size - 10);
                break;
        default:
                if (size != 0)
                        return -EBADMSG;
        }
        *ret = e;
        return 0;
}

int resource_tag(const char *agent_id, uint64_t vm_id, const char *role, char ret[CHVM_TAG_MAX + 1]) {
        int n = vm_id ? snprintf(ret, CHVM_TAG_MAX + 1, "chvm1:%s:%016" PRIx64 ":%s", agent_id, vm_id, role)
                      : snprintf(ret, CHVM_TAG_MAX + 1, "chvm1:%s:core:%s", agent_id, role);
        return n < 0 || n > CHVM_TAG_MAX ? -ENAMETOOLONG : 0;
}

int resource_tag_parse(const char *tag, char ret_agent[64], uint64_t *ret_vm_id, char ret_role[32]) {
        const char *a, *v, *r;
        size_t la, lv, lr;

        if (!tag || strncmp(tag, "chvm1:", 6) != 0)
                return -EINVAL;
        a = tag + 6;
        v = strchr(a, ':');
        if (!v)
                return -EINVAL;
        la = (size_t) (v - a);
        v++;
        r = strchr(v, ':');
        if (!r)
                return -EINVAL;
        lv = (size_t) (r - v);
        r++;
        lr = strlen(r);
        if (la == 0 || la >= 64 || lv == 0 || lr == 0 || lr >= 32 || strchr(r, ':'))
                return -EINVAL;

        uint64_t vm = 0;
        if (lv == 4 && memcmp(v, "core", 4) == 0)
                vm = 0;
        else if (lv == 16) {
                for (size_t i = 0; i < 16; i++) {
                        char c = v[i];
                        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
                        if (d < 0)
                                return -EINVAL;
                        vm = vm << 4 | (uint64_t) d;
                }
                if (vm == 0)
                        return -EINVAL;
        } else
                return -EINVAL;

        if (ret_agent) {
                memcpy(ret_agent, a, la);
                ret_agent[la] = '\0';
        }
        if (ret_vm_id)
                *ret_vm_id = vm;
        if (ret_role) {
                memcpy(ret_role, r, lr);
                ret_role[lr] = '\0';
        }
        return 0;
}
