/*
 * The public header compiles cleanly as C11 (-Wall -Wextra -Wpedantic -Werror), is self-contained,
 * survives double inclusion, and its struct layouts match the Rust side (repr(C)).
 * Built, linked against the library and run by tests/c_api.rs.
 */

/* Deprecated aliases get the compiler attribute: it must compile cleanly too. */
#define SB_WARN_DEPRECATED
#include "specblock.h"
#include "specblock.h" /* include guard */

#include <stddef.h>
#include <string.h>

_Static_assert(SB_STATUS_OK == 0, "SB_STATUS_OK is 0");
_Static_assert(SB_STATUS_PANIC == 13, "status values are stable");
_Static_assert(SB_MAX_KEEP == SB_MAX_DEPTH + 1, "keep list holds the root plus SB_MAX_DEPTH nodes");
_Static_assert(SB_MAX_NODES == 65536, "SB_MAX_NODES");
_Static_assert(SB_CUDA_DTYPE_F32 == 0 && SB_CUDA_DTYPE_BF16 == 1, "device logits types");
_Static_assert(SB_AUX_LAYERS == 3, "a feature row is three target layers");
_Static_assert(sizeof(sb_tree_params) == 12, "sb_tree_params: three uint32_t");
_Static_assert(sizeof(sb_sampling) == 16, "sb_sampling: u32, f32, i32, f32");
_Static_assert(offsetof(sb_sampling, top_p) == 12, "sb_sampling.top_p");
_Static_assert(sizeof(sb_node_meta) == 4, "sb_node_meta: four uint8_t");
_Static_assert(offsetof(sb_accept, bonus_token) == 4 + 2 * 4 * SB_MAX_DEPTH, "sb_accept.bonus_token");
_Static_assert(sizeof(sb_accept) == 4 * (1 + 2 * SB_MAX_DEPTH + 2 + SB_MAX_KEEP), "sb_accept size");
_Static_assert(SB_ADAPT_OFF == 0 && SB_ADAPT_BANDIT == 1 && SB_ADAPT_ALWAYS == 2, "adapter modes");
_Static_assert(sizeof(sb_adapter_params) == 56, "sb_adapter_params: nine uint32_t, float, two double");
_Static_assert(offsetof(sb_adapter_params, learning_rate) == 36, "sb_adapter_params.learning_rate");
_Static_assert(offsetof(sb_adapter_params, horizon_tokens) == 40, "sb_adapter_params.horizon_tokens");
_Static_assert(sizeof(sb_adapter_stats) == 112, "sb_adapter_stats: 8 u64, 2 double, 3 u64, double");
_Static_assert(offsetof(sb_adapter_stats, slots_recorded) == 80, "sb_adapter_stats.slots_recorded");

/* Every function, by pointer type: a changed signature fails to compile. */
static sb_status (*const add_fn)(struct sb_tree *, int32_t, int32_t, float, int32_t *) = sb_tree_add;
static sb_status (*const sample_fn)(const struct sb_tree *, const float *, uint32_t, uint32_t,
                                    const struct sb_sampling *, uint64_t, struct sb_accept *) =
    sb_verify_sample;
static size_t (*const flat_bytes_fn)(const struct sb_tree *, uint32_t) = sb_tree_mask_flat_bytes;
static sb_status (*const adapter_new_fn)(const struct sb_drafter *, const struct sb_adapter_params *,
                                         struct sb_adapter **) = sb_adapter_new;
static sb_status (*const attach_fn)(struct sb_session *, struct sb_adapter *) =
    sb_session_attach_adapter;

int main(void) {
    sb_tree_params params = sb_tree_default_params();
    sb_tree *tree = NULL;
    sb_accept acc;
    int32_t argmax[2] = {7, 9};
    int ok = 1;

    ok &= strcmp(sb_version(), SB_VERSION) == 0;
    ok &= sb_tree_new(&params, &tree) == SB_STATUS_OK;
    ok &= sb_tree_reset(tree, 1) == SB_STATUS_OK;
    ok &= add_fn(tree, 0, 7, -0.5f, NULL) == SB_STATUS_OK;
    ok &= sb_tree_finalize(tree, 1) == SB_STATUS_OK;
    ok &= flat_bytes_fn(tree, 0) == 1;
    ok &= sb_verify_greedy(tree, argmax, 2, &acc) == SB_STATUS_OK && acc.n_accepted == 1 &&
          acc.bonus_token == 9;
    ok &= sample_fn(tree, NULL, 2, 4, NULL, 0, &acc) == SB_STATUS_NULL_ARGUMENT;
    sb_adapter_params ap = sb_adapter_default_params();
    ok &= ap.struct_size == sizeof(sb_adapter_params) && ap.mode == SB_ADAPT_BANDIT;
    ok &= adapter_new_fn(NULL, &ap, NULL) == SB_STATUS_NULL_ARGUMENT;
    ok &= attach_fn(NULL, NULL) == SB_STATUS_NULL_ARGUMENT;
    sb_tree_free(tree);
    return ok ? 0 : 1;
}
