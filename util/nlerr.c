/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <libmnl/libmnl.h>
#include <stdio.h>

#include "util/nlerr.h"

static int extack_cb(const struct nlattr *attr, void *data) {
        char *out = data;
        if (mnl_attr_get_type(attr) == NLMSGERR_ATTR_MSG &&
            mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) >= 0)
                snprintf(out, NL_EXTACK_MAX, "%s", mnl_attr_get_str(attr));
        return MNL_CB_OK;
}

int nl_error_parse(const struct nlmsghdr *nlh, char extack[NL_EXTACK_MAX]) {
        const struct nlmsgerr *e = mnl_nlmsg_get_payload(nlh);

        extack[0] = '\0';
        if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(struct nlmsgerr)))
                return -EBADMSG;
        if (e->error == 0)
                return 0;
        if (nlh->nlmsg_flags & NLM_F_ACK_TLVS) {
                /* The TLVs follow the echoed request, or only its header when the ACK is capped. */
                size_t offset = sizeof(struct nlmsgerr);
                if (!(nlh->nlmsg_flags & NLM_F_CAPPED))
                        offset += e->msg.nlmsg_len - sizeof(struct nlmsghdr);
                if (mnl_nlmsg_size(offset) <= nlh->nlmsg_len)
                        (void) mnl_attr_parse(nlh, (unsigned) offset, extack_cb, extack);
        }
        return e->error;
}
