// dms/dms.hpp: the umbrella header of the core (dms::dms). It includes everything that needs no
// third-party library. The backends have their own headers: dms/backend/cpu/... (dms::cpu) and
// dms/backend/cuda/... (dms::cuda).
#pragma once

#include "dms/config.hpp"

#include "dms/core/dtype.hpp"
#include "dms/core/error.hpp"
#include "dms/core/half.hpp"
#include "dms/core/progress.hpp"
#include "dms/core/rng.hpp"
#include "dms/core/thread_pool.hpp"

#include "dms/concepts/merge_strategy.hpp"
#include "dms/concepts/model_backend.hpp"
#include "dms/concepts/probe.hpp"
#include "dms/concepts/steering_policy.hpp"
#include "dms/concepts/tensor_view.hpp"

#include "dms/probe/layer_sweep.hpp"
#include "dms/probe/logistic.hpp"
#include "dms/probe/metrics.hpp"

#include "dms/steer/composite_policy.hpp"
#include "dms/steer/conditional_policy.hpp"
#include "dms/steer/constant_policy.hpp"
#include "dms/steer/dms_policy.hpp"
#include "dms/steer/hook_names.hpp"
#include "dms/steer/policy_hooks.hpp"
#include "dms/steer/select_policy.hpp"
#include "dms/steer/vectors.hpp"
