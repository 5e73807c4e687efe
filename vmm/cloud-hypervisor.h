/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "vmm/hypervisor.h"

extern const HypervisorVTable cloud_hypervisor_vtable;
