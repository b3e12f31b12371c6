// All differentiable ops.
#pragma once
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/dropout.h"
#include "ops/elementwise.h"
#include "ops/linear.h"
#include "ops/loss.h"
#include "ops/metrics.h"
#include "ops/norm.h"
#include "ops/patch.h"
#include "ops/reduce.h"
#include "ops/shape.h"
