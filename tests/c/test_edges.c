/*
 * Inputs at the edge of their documented ranges, through the C API. Each check states the documented
 * contract it relies on. Same conventions as test_api.c: prints "N passed, M failed", exits non-zero on
 * any failure. Built and run by tests/c_api.rs.
 */

#include "specblock.h"

#include <float.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int g_passed;
static int g_failed;

#define CHECK(cond)                                                                                 \
    do {                                                                                            \
        if (cond) {                                                                                 \
            g_passed++;                                                                             \
        } else {                                                                                    \
            g_failed++;                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                \
        }                                                                                           \
    } while (0)

#define CHECK_STATUS(call, want)                                                                    \
    do {                                                                                            \
        sb_status got_ = (call);                                                                    \
        if (got_ == (want)) {                                                                       \
            g_passed++;                                                                             \
        } else {                                                                                    \
            g_failed++;                                                                             \
            fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d (%s)\n", __FILE__, __LINE__,   \
                    #call, (int)got_, sb_status_str((int32_t)got_), (int)(want),                   \
                    sb_status_str((int32_t)(want)));                                                \
        }                                                                                           \
    } while (0)

static int all_bytes(const void *p, size_t n, unsigned char byte) {
    const unsigned char *b = (const unsigned char *)p;
    size_t i;
    for (i = 0; i < n; i++) {
        if (b[i] != byte) return 0;
    }
    return 1;
}

static sb_tree *three_leaves(void) {
    sb_tree_params p = sb_tree_default_params();
    sb_tree *t = NULL;
    if (sb_tree_new(&p, &t) != SB_STATUS_OK) return NULL;
    sb_tree_reset(t, 0);
    sb_tree_add(t, 0, 1, -0.1f, NULL);
    sb_tree_add(t, 0, 2, -0.2f, NULL);
    sb_tree_add(t, 0, 3, -0.3f, NULL);
    sb_tree_finalize(t, 3);
    return t;
}

/*
 * sb_sampling.temperature: "Temperature (finite, >= 0); 0 = greedy." Every positive temperature is valid,
 * and as it shrinks sampling becomes greedy. Positive temperatures below 1 / FLT_MAX (about 2.9e-39,
 * subnormal floats) must behave like the tiny normal ones, not fail.
 */
static void test_tiny_positive_temperature(void) {
    enum { V = 8 };
    sb_tree *t = three_leaves();
    float logits[4 * V];
    sb_sampling greedy = sb_sampling_default(), s = sb_sampling_default();
    sb_accept want, got;
    const float temps[] = {1e-30f, FLT_MIN, 2e-39f, 1e-40f, 1e-45f /* smallest subnormal */};
    size_t k;
    int i;

    CHECK(t != NULL);
    if (t == NULL) return;
    for (i = 0; i < 4 * V; i++) logits[i] = (float)(i % V); /* argmax 7 everywhere: bonus 7 */
    greedy.temperature = 0.0f;
    CHECK_STATUS(sb_verify_sample(t, logits, 4, V, &greedy, 1, &want), SB_STATUS_OK);
    CHECK(want.n_accepted == 0 && want.bonus_token == 7);
    for (k = 0; k < sizeof temps / sizeof temps[0]; k++) {
        s.temperature = temps[k];
        memset(&got, 0, sizeof got);
        CHECK_STATUS(sb_verify_sample(t, logits, 4, V, &s, 1, &got), SB_STATUS_OK);
        if (memcmp(&got, &want, sizeof got) != 0) {
            fprintf(stderr, "  temperature %g: n_accepted %u, bonus %d (greedy: bonus 7)\n",
                    (double)temps[k], (unsigned)got.n_accepted, (int)got.bonus_token);
        }
        CHECK(memcmp(&got, &want, sizeof got) == 0);
    }
    sb_tree_free(t);
}

/*
 * sb_tree_seq_ranges: leaf k is sequence first_seq_id + k, written as int32_t. When every id fits in
 * int32_t the call succeeds; when they do not, it fails with a status (never SB_STATUS_PANIC, which means
 * "a bug in specblock") and, like every failing call, writes nothing.
 */
static void test_seq_ids_at_int32_max(void) {
    sb_tree *t = three_leaves();
    int32_t first[4], count[4];

    CHECK(t != NULL);
    if (t == NULL) return;
    /* Sequences INT32_MAX - 2 .. INT32_MAX: all representable. */
    CHECK_STATUS(sb_tree_seq_ranges(t, INT32_MAX - 2, UINT32_MAX, first, count, 4), SB_STATUS_OK);
    CHECK(first[0] == INT32_MAX - 2 && count[0] == 3);
    CHECK(first[1] == INT32_MAX - 2 && first[2] == INT32_MAX - 1 && first[3] == INT32_MAX);
    CHECK(count[1] == 1 && count[2] == 1 && count[3] == 1);

    /* Sequences INT32_MAX - 1 .. INT32_MAX + 1: the last does not fit. */
    memset(first, 0xA5, sizeof first);
    memset(count, 0xA5, sizeof count);
    {
        sb_status s = sb_tree_seq_ranges(t, INT32_MAX - 1, UINT32_MAX, first, count, 4);
        if (s == SB_STATUS_OK || s == SB_STATUS_PANIC) {
            fprintf(stderr, "  seq ids past INT32_MAX: status %d (%s)\n", (int)s, sb_status_str((int32_t)s));
        }
        CHECK(s != SB_STATUS_OK && s != SB_STATUS_PANIC);
    }
    CHECK(all_bytes(first, sizeof first, 0xA5) && all_bytes(count, sizeof count, 0xA5));

    /* Still usable. */
    CHECK_STATUS(sb_tree_seq_ranges(t, 0, 3, first, count, 4), SB_STATUS_OK);
    CHECK(first[0] == 0 && count[0] == 3 && first[3] == 2);
    sb_tree_free(t);
}

int main(void) {
    test_tiny_positive_temperature();
    test_seq_ids_at_int32_max();
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
