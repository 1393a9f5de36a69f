/*
 * C API tests for specblock: plain C11 against the public header only, no framework.
 *
 * Every expected value below was computed by hand from the documented semantics (finalize orders nodes
 * by depth, then cumulative log-probability descending, then insertion order). The program prints one
 * line per failed check (file:line) and ends with "N passed, M failed"; it exits non-zero on any failure.
 *
 * Built and run by tests/c_api.rs with gcc (static and shared library), clang ASan+UBSan and valgrind.
 */

#include "specblock.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* Array checks, on top of check.h. */

static void check_i32s_impl(const int32_t *got, const int32_t *want, size_t n, const char *file,
                            int line, const char *expr) {
    size_t i;
    for (i = 0; i < n; i++) {
        if (got[i] != want[i]) {
            size_t k;
            g_failed++;
            fprintf(stderr, "%s:%d: %s differs at [%zu]: got", file, line, expr, i);
            for (k = 0; k < n; k++) fprintf(stderr, " %d", got[k]);
            fprintf(stderr, ", expected");
            for (k = 0; k < n; k++) fprintf(stderr, " %d", want[k]);
            fprintf(stderr, "\n");
            return;
        }
    }
    g_passed++;
}

#define CHECK_I32S(got, ...)                                                                        \
    do {                                                                                            \
        const int32_t want_[] = {__VA_ARGS__};                                                      \
        check_i32s_impl((got), want_, sizeof want_ / sizeof want_[0], __FILE__, __LINE__, #got);    \
    } while (0)

static void check_u32s_impl(const uint32_t *got, const uint32_t *want, size_t n, const char *file,
                            int line, const char *expr) {
    size_t i;
    for (i = 0; i < n; i++) {
        if (got[i] != want[i]) {
            g_failed++;
            fprintf(stderr, "%s:%d: %s differs at [%zu]: got 0x%08X, expected 0x%08X\n", file, line,
                    expr, i, (unsigned)got[i], (unsigned)want[i]);
            return;
        }
    }
    g_passed++;
}

#define CHECK_U32S(got, ...)                                                                        \
    do {                                                                                            \
        const uint32_t want_[] = {__VA_ARGS__};                                                     \
        check_u32s_impl((got), want_, sizeof want_ / sizeof want_[0], __FILE__, __LINE__, #got);    \
    } while (0)

static void check_u8s_impl(const uint8_t *got, const uint8_t *want, size_t n, const char *file,
                           int line, const char *expr) {
    size_t i;
    for (i = 0; i < n; i++) {
        if (got[i] != want[i]) {
            g_failed++;
            fprintf(stderr, "%s:%d: %s differs at [%zu]: got 0x%02X, expected 0x%02X\n", file, line,
                    expr, i, (unsigned)got[i], (unsigned)want[i]);
            return;
        }
    }
    g_passed++;
}

#define CHECK_U8S(got, ...)                                                                         \
    do {                                                                                            \
        const uint8_t want_[] = {__VA_ARGS__};                                                      \
        check_u8s_impl((got), want_, sizeof want_ / sizeof want_[0], __FILE__, __LINE__, #got);     \
    } while (0)

/* True when every byte of the object is `byte`: a buffer the library must not have touched. */
static int all_bytes(const void *p, size_t n, unsigned char byte) {
    const unsigned char *b = (const unsigned char *)p;
    size_t i;
    for (i = 0; i < n; i++) {
        if (b[i] != byte) return 0;
    }
    return 1;
}

#define SENTINEL 0xA5
#define SENTINEL_I32 ((int32_t)0xA5A5A5A5)

static int approx(float got, float want) { return fabsf(got - want) <= 1e-5f; }

/* Deterministic pseudo-random numbers (64-bit LCG, Knuth's MMIX constants). */
static uint64_t g_lcg = 0x5eed;
static uint32_t lcg(void) {
    g_lcg = g_lcg * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(g_lcg >> 33);
}
static uint32_t lcg_below(uint32_t n) { return lcg() % n; }
static float lcg_unit(void) { return (float)(lcg() >> 7) / 16777216.0f; } /* [0, 1) */

static sb_tree *new_tree(uint32_t max_nodes, uint32_t max_depth) {
    sb_tree_params p = sb_tree_default_params();
    sb_tree *t = NULL;
    sb_status s;
    p.max_nodes = max_nodes;
    p.max_depth = max_depth;
    s = sb_tree_new(&p, &t);
    if (s != SB_STATUS_OK || t == NULL) {
        fprintf(stderr, "fatal: sb_tree_new(%u, %u): %s\n", (unsigned)max_nodes, (unsigned)max_depth,
                sb_status_str((int32_t)s));
        exit(2);
    }
    return t;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Fixtures                                                                                             */
/* ---------------------------------------------------------------------------------------------------- */

/*
 * The layout tree. Insertion (id: parent, token, logprob -> cumulative):
 *   1: 0, 10, -0.2 -> -0.2      2: 0, 20, -1.5 -> -1.5
 *   3: 1, 11, -0.3 -> -0.5      4: 1, 12, -0.9 -> -1.1
 *   5: 3, 13, -0.1 -> -0.6      6: 2, 21, -0.2 -> -1.7
 * Finalized (depth, then cum desc): 0 | 1=src1 2=src2 | 3=src3 4=src4 5=src6 | 6=src5
 *
 *            0 (50)
 *          /        \
 *      1 (10)       2 (20)
 *      /    \          |
 *   3 (11)  4 (12)   5 (21)
 *     |
 *   6 (13)
 *
 * Node metadata: user = insertion id, block = depth, slot = token % 7, rank_class = 3.
 */
static void build_layout_tree(sb_tree *t) {
    static const int32_t parent[] = {0, 0, 0, 1, 1, 3, 2};
    static const int32_t token[] = {0, 10, 20, 11, 12, 13, 21};
    static const float logprob[] = {0, -0.2f, -1.5f, -0.3f, -0.9f, -0.1f, -0.2f};
    static const uint8_t depth[] = {0, 1, 1, 2, 2, 3, 2};
    int k;
    CHECK_OK(sb_tree_reset(t, 50));
    for (k = 1; k <= 6; k++) {
        sb_node_meta meta;
        int32_t id = -1;
        meta.block = depth[k];
        meta.slot = (uint8_t)(token[k] % 7);
        meta.rank_class = 3;
        meta.user = (uint8_t)k;
        CHECK_OK(sb_tree_add_meta(t, parent[k], token[k], logprob[k], meta, &id));
        CHECK_EQ(id, k);
    }
}

enum { LT_N = 7 };

/* ---------------------------------------------------------------------------------------------------- */
/* Tests                                                                                                */
/* ---------------------------------------------------------------------------------------------------- */

static void test_version_status_defaults(void) {
    char buf[64];
    int32_t s, s2;
    sb_tree_params p;
    sb_sampling sm;

    CHECK(sb_version() != NULL);
    CHECK(strcmp(sb_version(), SB_VERSION) == 0);
    snprintf(buf, sizeof buf, "%d.%d.%d", SB_VERSION_MAJOR, SB_VERSION_MINOR, SB_VERSION_PATCH);
    CHECK(strcmp(buf, SB_VERSION) == 0);

    CHECK_EQ(SB_STATUS_OK, 0);
    CHECK_EQ(SB_STATUS_PANIC, 13);
    CHECK_EQ(SB_STATUS_DEVICE_ERROR, 15);
    for (s = SB_STATUS_OK; s <= SB_STATUS_DEVICE_ERROR; s++) {
        const char *text = sb_status_str(s);
        CHECK(text != NULL && text[0] != '\0');
        CHECK(text != NULL && strcmp(text, "unknown status") != 0);
        for (s2 = SB_STATUS_OK; s2 < s; s2++) CHECK(strcmp(text, sb_status_str(s2)) != 0);
    }
    CHECK(strcmp(sb_status_str(SB_STATUS_DEVICE_ERROR + 1), "unknown status") == 0);
    CHECK(strcmp(sb_status_str(9999), "unknown status") == 0);
    CHECK(strcmp(sb_status_str(-1), "unknown status") == 0);
    CHECK(strcmp(sb_status_str(INT32_MIN), "unknown status") == 0);
    CHECK(strcmp(sb_status_str(INT32_MAX), "unknown status") == 0);
    /* Static strings: the same pointer every time. */
    CHECK(sb_status_str(SB_STATUS_CAPACITY) == sb_status_str(SB_STATUS_CAPACITY));

    p = sb_tree_default_params();
    CHECK_EQ(p.struct_size, sizeof(sb_tree_params));
    CHECK_EQ(p.max_nodes, 128);
    CHECK_EQ(p.max_depth, 16);
    sm = sb_sampling_default();
    CHECK_EQ(sm.struct_size, sizeof(sb_sampling));
    CHECK(sm.temperature == 1.0f);
    CHECK_EQ(sm.top_k, 0);
    CHECK(sm.top_p == 1.0f);
    /* The renamed function and its deprecated old name give the same defaults. */
    {
        sb_sampling renamed = sb_sampling_default_params();
        CHECK(memcmp(&renamed, &sm, sizeof sm) == 0);
    }

    CHECK_EQ(SB_MAX_KEEP, SB_MAX_DEPTH + 1);
    CHECK_EQ(sizeof(((sb_accept *)0)->nodes) / sizeof(int32_t), SB_MAX_DEPTH);
    CHECK_EQ(sizeof(((sb_accept *)0)->keep) / sizeof(int32_t), SB_MAX_KEEP);
}

static void test_create_errors_and_null_handles(void) {
    sb_tree_params p = sb_tree_default_params();
    sb_tree *t = NULL;
    int32_t buf[4];
    sb_accept acc;
    sb_sampling sm = sb_sampling_default();
    float logits[4] = {0, 0, 0, 0};
    int32_t a2[1] = {0};

    CHECK_STATUS(sb_tree_new(NULL, &t), SB_STATUS_NULL_ARGUMENT);
    CHECK(t == NULL);
    CHECK_STATUS(sb_tree_new(&p, NULL), SB_STATUS_NULL_ARGUMENT);

    p.struct_size = 0;
    CHECK_STATUS(sb_tree_new(&p, &t), SB_STATUS_STRUCT_SIZE);
    p.struct_size = (uint32_t)sizeof(sb_tree_params) - 4;
    CHECK_STATUS(sb_tree_new(&p, &t), SB_STATUS_STRUCT_SIZE);
    p.struct_size = (uint32_t)sizeof(sb_tree_params) + 4;
    CHECK_STATUS(sb_tree_new(&p, &t), SB_STATUS_STRUCT_SIZE);
    CHECK(t == NULL);

    p = sb_tree_default_params();
    p.max_nodes = 0;
    CHECK_STATUS(sb_tree_new(&p, &t), SB_STATUS_INVALID_ARGUMENT);
    p.max_nodes = SB_MAX_NODES + 1;
    CHECK_STATUS(sb_tree_new(&p, &t), SB_STATUS_INVALID_ARGUMENT);
    p = sb_tree_default_params();
    p.max_depth = 0;
    CHECK_STATUS(sb_tree_new(&p, &t), SB_STATUS_INVALID_ARGUMENT);
    p.max_depth = SB_MAX_DEPTH + 1;
    CHECK_STATUS(sb_tree_new(&p, &t), SB_STATUS_INVALID_ARGUMENT);
    CHECK(t == NULL);

    /* The extremes are accepted. */
    p.max_nodes = SB_MAX_NODES;
    p.max_depth = SB_MAX_DEPTH;
    CHECK_OK(sb_tree_new(&p, &t));
    CHECK(t != NULL);
    CHECK_EQ(sb_tree_len(t), 0); /* before the first reset */
    CHECK_OK(sb_tree_reset(t, 0));
    CHECK_OK(sb_tree_finalize(t, SB_MAX_NODES));
    CHECK_EQ(sb_tree_len(t), 1);
    sb_tree_free(t);
    t = NULL;
    p.max_nodes = 1;
    p.max_depth = 1;
    CHECK_OK(sb_tree_new(&p, &t));
    sb_tree_free(t);

    /* NULL is a no-op for free and gives 0 from every getter. */
    sb_tree_free(NULL);
    CHECK_EQ(sb_tree_len(NULL), 0);
    CHECK_EQ(sb_tree_is_finalized(NULL), 0);
    CHECK_EQ(sb_tree_num_leaves(NULL), 0);
    CHECK_EQ(sb_tree_depth(NULL), 0);
    CHECK_EQ(sb_tree_mask_words_per_row(NULL, 0), 0);
    CHECK_EQ(sb_tree_mask_flat_bytes(NULL, 0), 0);

    /* NULL handle into every fallible call. */
    CHECK_STATUS(sb_tree_reset(NULL, 0), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_tree_add(NULL, 0, 1, -1.0f, NULL), SB_STATUS_NULL_ARGUMENT);
    {
        sb_node_meta m = {0, 0, 0, 0};
        CHECK_STATUS(sb_tree_add_meta(NULL, 0, 1, -1.0f, m, NULL), SB_STATUS_NULL_ARGUMENT);
    }
    CHECK_STATUS(sb_tree_finalize(NULL, 1), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_tree_tokens(NULL, buf, 4), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_tree_parents(NULL, buf, 4), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_tree_depths(NULL, buf, 4), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_tree_positions(NULL, 0, buf, 4), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_tree_first_child(NULL, buf, 4), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_tree_next_sibling(NULL, buf, 4), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_tree_mask_dense(NULL, (uint8_t *)buf, 16), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_tree_mask_bias(NULL, (float *)buf, 4), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_tree_mask_bits(NULL, 0, (uint32_t *)buf, 4), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_tree_mask_flat_bits(NULL, 0, (uint8_t *)buf, 16), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_tree_retrieve_paths(NULL, 4, buf, 4, NULL), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_tree_seq_ranges(NULL, 0, 8, buf, buf + 2, 2), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_tree_cum_logprobs(NULL, (float *)buf, 4), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_tree_node_meta(NULL, (sb_node_meta *)buf, 4), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_tree_source_ids(NULL, buf, 4), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_verify_greedy(NULL, a2, 1, &acc), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_verify_sample(NULL, logits, 1, 4, &sm, 1, &acc), SB_STATUS_NULL_ARGUMENT);
}

/*
 * SGLang's golden greedy-verification example (sgl-kernel tests/speculative/test_eagle_utils.py), request 0:
 * edges 0->1->2 and 0->3->4->5, the candidate token of SGLang node k is k; the target predicts 3 after the
 * root, 4 after node 3, 5 after node 4 and 18 everywhere else: SGLang accepts [0, 3, 4, 5], bonus 18.
 *
 * Insertion ids follow SGLang's node ids, with log-probs 1: -0.5, 2: -0.5 (cum -1.0), 3: -1.0,
 * 4: -0.1 (cum -1.1), 5: -0.1 (cum -1.2). Finalized: 0 | 1=s1 2=s3 | 3=s2 4=s4 | 5=s5.
 */
static void test_sglang_request_0(void) {
    sb_tree *t = new_tree(16, 8);
    int32_t id[6], tok[6], par[6], src[6], fc[6], ns[6], fc_sg[6], ns_sg[6];
    int32_t argmax[6];
    int k;
    sb_accept acc;
    static const int32_t sg_parent[6] = {-1, 0, 1, 0, 3, 4};
    static const float sg_logprob[6] = {0, -0.5f, -0.5f, -1.0f, -0.1f, -0.1f};
    static const int32_t predicts_by_sglang_id[6] = {3, 18, 18, 4, 5, 18};

    CHECK_OK(sb_tree_reset(t, 0));
    id[0] = 0;
    for (k = 1; k < 6; k++) {
        CHECK_OK(sb_tree_add(t, id[sg_parent[k]], k, sg_logprob[k], &id[k]));
        CHECK_EQ(id[k], k);
    }
    CHECK_OK(sb_tree_finalize(t, 16));
    CHECK_EQ(sb_tree_len(t), 6);
    CHECK_OK(sb_tree_tokens(t, tok, 6));
    CHECK_I32S(tok, 0, 1, 3, 2, 4, 5);
    CHECK_OK(sb_tree_parents(t, par, 6));
    CHECK_I32S(par, -1, 0, 0, 1, 2, 4);
    CHECK_OK(sb_tree_source_ids(t, src, 6));
    CHECK_I32S(src, 0, 1, 3, 2, 4, 5);
    CHECK_OK(sb_tree_first_child(t, fc, 6));
    CHECK_I32S(fc, 1, 3, 4, -1, 5, -1);
    CHECK_OK(sb_tree_next_sibling(t, ns, 6));
    CHECK_I32S(ns, -1, 2, -1, -1, -1, -1);
    /* Mapped to SGLang ids: its retrive_next_token / retrive_next_sibling for this request. */
    for (k = 0; k < 6; k++) {
        fc_sg[src[k]] = fc[k] < 0 ? -1 : src[fc[k]];
        ns_sg[src[k]] = ns[k] < 0 ? -1 : src[ns[k]];
    }
    CHECK_I32S(fc_sg, 1, 2, -1, 4, 5, -1);
    CHECK_I32S(ns_sg, -1, 3, -1, -1, -1, -1);

    for (k = 0; k < 6; k++) argmax[k] = predicts_by_sglang_id[src[k]];
    CHECK_I32S(argmax, 3, 18, 4, 18, 5, 18);
    memset(&acc, SENTINEL, sizeof acc);
    CHECK_OK(sb_verify_greedy(t, argmax, 6, &acc));
    CHECK_EQ(acc.n_accepted, 3);
    CHECK_I32S(acc.nodes, 2, 4, 5);
    CHECK_I32S(acc.tokens, 3, 4, 5);
    CHECK_EQ(acc.bonus_token, 18);
    CHECK_EQ(acc.n_keep, 4);
    CHECK_I32S(acc.keep, 0, 2, 4, 5);
    {
        int32_t keep_sg[4];
        for (k = 0; k < 4; k++) keep_sg[k] = src[acc.keep[k]];
        CHECK_I32S(keep_sg, 0, 3, 4, 5); /* SGLang accept_index [0, 3, 4, 5] */
    }

    /* Temperature 0 through sb_verify_sample with one-hot logits gives the same acceptance. */
    {
        enum { V = 20 };
        float logits[6 * V];
        sb_sampling sm = sb_sampling_default();
        sb_accept acc2;
        int i;
        for (i = 0; i < 6 * V; i++) logits[i] = 0.0f;
        for (k = 0; k < 6; k++) logits[k * V + argmax[k]] = 1.0f;
        sm.temperature = 0.0f;
        CHECK_OK(sb_verify_sample(t, logits, 6, V, &sm, 99, &acc2));
        CHECK(memcmp(&acc, &acc2, sizeof acc) == 0);
    }
    sb_tree_free(t);
}

/*
 * SGLang request 1: first-child links [4, 2, 3, -1, 5, -1] and sibling 4 -> 1, i.e. edges 0->4, 0->1,
 * 1->2, 2->3, 4->5, tokens 0, 11..15; the target predicts 14 after the root, 15 after node 4 and 7 after
 * node 5: SGLang accepts rows [0, 4, 5] and emits 7. Log-probs 1: -1.0, 2: -0.1, 3: -0.1, 4: -0.2, 5: -0.1,
 * so finalized ids are 0 | 1=s4 2=s1 | 3=s5 4=s2 | 5=s3.
 */
static void test_sglang_request_1(void) {
    sb_tree *t = new_tree(16, 8);
    static const int32_t sg_parent[6] = {-1, 0, 1, 2, 0, 4};
    static const int32_t sg_token[6] = {0, 11, 12, 13, 14, 15};
    static const float sg_logprob[6] = {0, -1.0f, -0.1f, -0.1f, -0.2f, -0.1f};
    static const int32_t predicts_by_sglang_id[6] = {14, 0, 0, 0, 15, 7};
    int32_t tok[6], src[6], par[6], argmax[6];
    int k;
    sb_accept acc;

    CHECK_OK(sb_tree_reset(t, 0));
    for (k = 1; k < 6; k++) CHECK_OK(sb_tree_add(t, sg_parent[k], sg_token[k], sg_logprob[k], NULL));
    CHECK_OK(sb_tree_finalize(t, 16));
    CHECK_OK(sb_tree_tokens(t, tok, 6));
    CHECK_I32S(tok, 0, 14, 11, 15, 12, 13);
    CHECK_OK(sb_tree_parents(t, par, 6));
    CHECK_I32S(par, -1, 0, 0, 1, 2, 4);
    CHECK_OK(sb_tree_source_ids(t, src, 6));
    CHECK_I32S(src, 0, 4, 1, 5, 2, 3);
    for (k = 0; k < 6; k++) argmax[k] = predicts_by_sglang_id[src[k]];
    CHECK_OK(sb_verify_greedy(t, argmax, 6, &acc));
    CHECK_EQ(acc.n_accepted, 2);
    CHECK_I32S(acc.nodes, 1, 3);
    CHECK_I32S(acc.tokens, 14, 15);
    CHECK_EQ(acc.bonus_token, 7);
    CHECK_EQ(acc.n_keep, 3);
    CHECK_I32S(acc.keep, 0, 1, 3);
    sb_tree_free(t);
}

static void test_layouts(void) {
    sb_tree *t = new_tree(16, 8);
    int32_t v[LT_N], first[LT_N], count[LT_N];
    float cum[LT_N], bias[LT_N * LT_N];
    uint8_t dense[LT_N * LT_N];
    sb_node_meta meta[LT_N];
    int32_t paths[5 * 3];
    uint32_t rows = 0;
    int i, j;

    build_layout_tree(t);
    CHECK_EQ(sb_tree_len(t), 7);
    CHECK_EQ(sb_tree_is_finalized(t), 0);
    CHECK_OK(sb_tree_finalize(t, 6));
    CHECK_EQ(sb_tree_is_finalized(t), 1);
    CHECK_EQ(sb_tree_len(t), LT_N);
    CHECK_EQ(sb_tree_num_leaves(t), 3);
    CHECK_EQ(sb_tree_depth(t), 3);

    CHECK_OK(sb_tree_tokens(t, v, LT_N));
    CHECK_I32S(v, 50, 10, 20, 11, 12, 21, 13);
    CHECK_OK(sb_tree_parents(t, v, LT_N));
    CHECK_I32S(v, -1, 0, 0, 1, 1, 2, 3);
    CHECK_OK(sb_tree_depths(t, v, LT_N));
    CHECK_I32S(v, 0, 1, 1, 2, 2, 2, 3);
    CHECK_OK(sb_tree_positions(t, 0, v, LT_N));
    CHECK_I32S(v, 0, 1, 1, 2, 2, 2, 3);
    CHECK_OK(sb_tree_positions(t, 10, v, LT_N));
    CHECK_I32S(v, 10, 11, 11, 12, 12, 12, 13);
    CHECK_OK(sb_tree_source_ids(t, v, LT_N));
    CHECK_I32S(v, 0, 1, 2, 3, 4, 6, 5);
    CHECK_OK(sb_tree_first_child(t, v, LT_N));
    CHECK_I32S(v, 1, 3, 5, 6, -1, -1, -1);
    CHECK_OK(sb_tree_next_sibling(t, v, LT_N));
    CHECK_I32S(v, -1, 2, -1, 4, -1, -1, -1);

    CHECK_OK(sb_tree_cum_logprobs(t, cum, LT_N));
    CHECK(cum[0] == 0.0f);
    CHECK(approx(cum[1], -0.2f));
    CHECK(approx(cum[2], -1.5f));
    CHECK(approx(cum[3], -0.5f));
    CHECK(approx(cum[4], -1.1f));
    CHECK(approx(cum[5], -1.7f));
    CHECK(approx(cum[6], -0.6f));

    /* Metadata travels with its node through finalize (user = insertion id). */
    CHECK_OK(sb_tree_node_meta(t, meta, LT_N));
    CHECK(meta[0].block == 0 && meta[0].slot == 0 && meta[0].rank_class == 0 && meta[0].user == 0);
    {
        static const uint8_t want_user[LT_N] = {0, 1, 2, 3, 4, 6, 5};
        static const int32_t want_token[LT_N] = {50, 10, 20, 11, 12, 21, 13};
        static const uint8_t want_depth[LT_N] = {0, 1, 1, 2, 2, 2, 3};
        for (i = 1; i < LT_N; i++) {
            CHECK_EQ(meta[i].user, want_user[i]);
            CHECK_EQ(meta[i].block, want_depth[i]);
            CHECK_EQ(meta[i].slot, want_token[i] % 7);
            CHECK_EQ(meta[i].rank_class, 3);
        }
    }

    /* Dense ancestor-or-self mask. */
    CHECK_OK(sb_tree_mask_dense(t, dense, sizeof dense));
    CHECK_U8S(dense,
              1, 0, 0, 0, 0, 0, 0, /* 0 */
              1, 1, 0, 0, 0, 0, 0, /* 1 */
              1, 0, 1, 0, 0, 0, 0, /* 2 */
              1, 1, 0, 1, 0, 0, 0, /* 3 */
              1, 1, 0, 0, 1, 0, 0, /* 4 */
              1, 0, 1, 0, 0, 1, 0, /* 5 */
              1, 1, 0, 1, 0, 0, 1  /* 6 */);

    /* Additive bias: 0 where the mask is 1, -inf elsewhere. */
    CHECK_OK(sb_tree_mask_bias(t, bias, LT_N * LT_N));
    {
        int bias_ok = 1;
        for (i = 0; i < LT_N * LT_N; i++) {
            if (dense[i]) {
                bias_ok &= bias[i] == 0.0f;
            } else {
                bias_ok &= isinf(bias[i]) && bias[i] < 0.0f;
            }
        }
        CHECK(bias_ok);
    }

    /* Bit rows, no prefix: one word per row, bit j = node j (TRT-LLM packed mask). */
    {
        uint32_t bits[LT_N * 3];
        CHECK_EQ(sb_tree_mask_words_per_row(t, 0), 1);
        CHECK_OK(sb_tree_mask_bits(t, 0, bits, LT_N));
        CHECK_U32S(bits, 0x1, 0x3, 0x5, 0xB, 0x13, 0x25, 0x4B);

        /* prefix 40: ceil(47 / 32) = 2 words; columns 0..39 set, node j at column 40 + j. */
        CHECK_EQ(sb_tree_mask_words_per_row(t, 40), 2);
        CHECK_OK(sb_tree_mask_bits(t, 40, bits, LT_N * 2));
        CHECK_U32S(bits, 0xFFFFFFFFu, 0x1FF, 0xFFFFFFFFu, 0x3FF, 0xFFFFFFFFu, 0x5FF, 0xFFFFFFFFu, 0xBFF,
                   0xFFFFFFFFu, 0x13FF, 0xFFFFFFFFu, 0x25FF, 0xFFFFFFFFu, 0x4BFF);

        /* prefix 60: ceil(67 / 32) = 3 words; nodes 0..3 in bits 28..31 of word 1, 4..6 in word 2. */
        CHECK_EQ(sb_tree_mask_words_per_row(t, 60), 3);
        CHECK_OK(sb_tree_mask_bits(t, 60, bits, LT_N * 3));
        CHECK_U32S(bits,
                   0xFFFFFFFFu, 0x1FFFFFFFu, 0x0, /* 0 */
                   0xFFFFFFFFu, 0x3FFFFFFFu, 0x0, /* 1 */
                   0xFFFFFFFFu, 0x5FFFFFFFu, 0x0, /* 2 */
                   0xFFFFFFFFu, 0xBFFFFFFFu, 0x0, /* 3 */
                   0xFFFFFFFFu, 0x3FFFFFFFu, 0x1, /* 4 */
                   0xFFFFFFFFu, 0x5FFFFFFFu, 0x2, /* 5 */
                   0xFFFFFFFFu, 0xBFFFFFFFu, 0x4  /* 6 */);

        /* prefix 25: 32 columns fill exactly one word. */
        CHECK_EQ(sb_tree_mask_words_per_row(t, 25), 1);
        CHECK_OK(sb_tree_mask_bits(t, 25, bits, LT_N));
        CHECK_U32S(bits, 0x03FFFFFFu, 0x07FFFFFFu, 0x0BFFFFFFu, 0x17FFFFFFu, 0x27FFFFFFu, 0x4BFFFFFFu,
                   0x97FFFFFFu);
    }

    /* Flat FlashInfer bits: row-major 7 x (prefix + 7), little bit order. */
    {
        uint8_t flat[16];
        CHECK_EQ(sb_tree_mask_flat_bytes(t, 0), 7); /* ceil(49 / 8) */
        memset(flat, SENTINEL, sizeof flat);
        CHECK_OK(sb_tree_mask_flat_bits(t, 0, flat, sizeof flat));
        CHECK_U8S(flat, 0x81, 0x41, 0x61, 0x31, 0x29, 0x2D, 0x01);
        CHECK(all_bytes(flat + 7, sizeof flat - 7, SENTINEL)); /* exactly 7 bytes written */

        CHECK_EQ(sb_tree_mask_flat_bytes(t, 3), 9); /* ceil(7 * 10 / 8) */
        CHECK_OK(sb_tree_mask_flat_bits(t, 3, flat, 9));
        CHECK_U8S(flat, 0x0F, 0x7C, 0xF0, 0xC2, 0x17, 0x9F, 0xBC, 0xF4, 0x25);
    }

    /* Retrieve paths: leaves 6, 4, 5 in depth-first (lexicographic) order, padded with -1. */
    memset(paths, SENTINEL, sizeof paths);
    CHECK_OK(sb_tree_retrieve_paths(t, 4, paths, 12, &rows));
    CHECK_EQ(rows, 3);
    CHECK_I32S(paths, 0, 1, 3, 6, /**/ 0, 1, 4, -1, /**/ 0, 2, 5, -1);
    CHECK_OK(sb_tree_retrieve_paths(t, 5, paths, 15, NULL)); /* out_rows may be NULL */
    CHECK_I32S(paths, 0, 1, 3, 6, -1, /**/ 0, 1, 4, -1, -1, /**/ 0, 2, 5, -1, -1);

    /* llama.cpp sequences: leaf k is sequence first_seq_id + k; each node spans its leaves. */
    CHECK_OK(sb_tree_seq_ranges(t, 0, 3, first, count, LT_N));
    CHECK_I32S(first, 0, 0, 2, 0, 1, 2, 0);
    CHECK_I32S(count, 3, 2, 1, 1, 1, 1, 1);
    CHECK_OK(sb_tree_seq_ranges(t, 5, 8, first, count, LT_N));
    CHECK_I32S(first, 5, 5, 7, 5, 6, 7, 5);
    CHECK_I32S(count, 3, 2, 1, 1, 1, 1, 1);
    /* first_seq_id + leaves > max_seq. */
    memset(first, SENTINEL, sizeof first);
    memset(count, SENTINEL, sizeof count);
    CHECK_STATUS(sb_tree_seq_ranges(t, 0, 2, first, count, LT_N), SB_STATUS_CAPACITY);
    CHECK_STATUS(sb_tree_seq_ranges(t, 1, 3, first, count, LT_N), SB_STATUS_CAPACITY);
    CHECK_STATUS(sb_tree_seq_ranges(t, 6, 8, first, count, LT_N), SB_STATUS_CAPACITY);
    CHECK_STATUS(sb_tree_seq_ranges(t, -1, 8, first, count, LT_N), SB_STATUS_INVALID_ARGUMENT);
    CHECK(all_bytes(first, sizeof first, SENTINEL) && all_bytes(count, sizeof count, SENTINEL));
    /* The two outputs may not overlap (the same buffer, or one shifted into the other). */
    CHECK_STATUS(sb_tree_seq_ranges(t, 5, 8, first, first, LT_N), SB_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(sb_tree_seq_ranges(t, 5, 8, first, first + 1, LT_N - 1), SB_STATUS_INVALID_ARGUMENT);
    CHECK(all_bytes(first, sizeof first, SENTINEL));
    CHECK_OK(sb_tree_seq_ranges(t, 5, 8, first, count, LT_N)); /* still usable */
    CHECK_I32S(first, 5, 5, 7, 5, 6, 7, 5);

    /* The dense mask agrees with the parent array (row i = row parent(i) plus column i). */
    CHECK_OK(sb_tree_parents(t, v, LT_N));
    {
        int rows_ok = 1;
        for (i = 1; i < LT_N; i++) {
            for (j = 0; j < LT_N; j++) {
                int want = (j == i) ? 1 : dense[v[i] * LT_N + j];
                rows_ok &= dense[i * LT_N + j] == want;
            }
        }
        CHECK(rows_ok);
    }

    /* Greedy walk: root -> 10 (node 1) -> 12 (node 4, a leaf) -> bonus 99. */
    {
        const int32_t argmax[LT_N] = {10, 12, 0, 0, 99, 0, 0};
        sb_accept acc;
        CHECK_OK(sb_verify_greedy(t, argmax, LT_N, &acc));
        CHECK_EQ(acc.n_accepted, 2);
        CHECK_I32S(acc.nodes, 1, 4);
        CHECK_I32S(acc.tokens, 10, 12);
        CHECK_EQ(acc.bonus_token, 99);
        CHECK_EQ(acc.n_keep, 3);
        CHECK_I32S(acc.keep, 0, 1, 4);
    }
    /* Nothing accepted: the bonus is the argmax after the root. */
    {
        const int32_t argmax[LT_N] = {7, 12, 0, 0, 99, 0, 0};
        sb_accept acc;
        CHECK_OK(sb_verify_greedy(t, argmax, LT_N, &acc));
        CHECK_EQ(acc.n_accepted, 0);
        CHECK_EQ(acc.bonus_token, 7);
        CHECK_EQ(acc.n_keep, 1);
        CHECK_EQ(acc.keep[0], 0);
    }
    /* Deepest path: 10, 11, 13, then the argmax after node 6. */
    {
        const int32_t argmax[LT_N] = {10, 11, 21, 13, 99, 0, 42};
        sb_accept acc;
        CHECK_OK(sb_verify_greedy(t, argmax, LT_N, &acc));
        CHECK_EQ(acc.n_accepted, 3);
        CHECK_I32S(acc.nodes, 1, 3, 6);
        CHECK_I32S(acc.tokens, 10, 11, 13);
        CHECK_EQ(acc.bonus_token, 42);
        CHECK_I32S(acc.keep, 0, 1, 3, 6);
    }

    /* Positions: the largest position that fits int32 is accepted, one more is not. */
    CHECK_OK(sb_tree_positions(t, (uint32_t)INT32_MAX - 3, v, LT_N));
    CHECK_EQ(v[6], INT32_MAX);
    memset(v, SENTINEL, sizeof v);
    CHECK_STATUS(sb_tree_positions(t, (uint32_t)INT32_MAX - 2, v, LT_N), SB_STATUS_INVALID_ARGUMENT);
    CHECK(all_bytes(v, sizeof v, SENTINEL));

    /* Finalizing a finalized tree again with the same budget changes nothing. */
    CHECK_OK(sb_tree_finalize(t, 6));
    CHECK_EQ(sb_tree_len(t), LT_N);
    CHECK_OK(sb_tree_tokens(t, v, LT_N));
    CHECK_I32S(v, 50, 10, 20, 11, 12, 21, 13);
    CHECK_OK(sb_tree_parents(t, v, LT_N));
    CHECK_I32S(v, -1, 0, 0, 1, 1, 2, 3);
    sb_tree_free(t);
}

/* A tree that is only its root. */
static void test_lone_root(void) {
    sb_tree *t = new_tree(4, 2);
    int32_t v[2], first[1], count[1], paths[2];
    uint8_t dense[1], flat[1];
    uint32_t bits[1], rows = 0;
    sb_accept acc;
    const int32_t argmax[1] = {9};

    CHECK_OK(sb_tree_reset(t, 5));
    CHECK_EQ(sb_tree_len(t), 1);
    CHECK_OK(sb_tree_finalize(t, 0));
    CHECK_EQ(sb_tree_len(t), 1);
    CHECK_EQ(sb_tree_num_leaves(t), 1); /* a lone root is one leaf */
    CHECK_EQ(sb_tree_depth(t), 0);
    CHECK_OK(sb_tree_tokens(t, v, 1));
    CHECK_EQ(v[0], 5);
    CHECK_OK(sb_tree_parents(t, v, 1));
    CHECK_EQ(v[0], -1);
    CHECK_OK(sb_tree_positions(t, 17, v, 1));
    CHECK_EQ(v[0], 17);
    CHECK_OK(sb_tree_first_child(t, v, 1));
    CHECK_EQ(v[0], -1);
    CHECK_OK(sb_tree_mask_dense(t, dense, 1));
    CHECK_EQ(dense[0], 1);
    CHECK_EQ(sb_tree_mask_words_per_row(t, 0), 1);
    CHECK_OK(sb_tree_mask_bits(t, 0, bits, 1));
    CHECK_EQ(bits[0], 1);
    CHECK_EQ(sb_tree_mask_flat_bytes(t, 0), 1);
    CHECK_OK(sb_tree_mask_flat_bits(t, 0, flat, 1));
    CHECK_EQ(flat[0], 1);
    CHECK_OK(sb_tree_retrieve_paths(t, 1, paths, 1, &rows));
    CHECK_EQ(rows, 1);
    CHECK_EQ(paths[0], 0);
    CHECK_OK(sb_tree_seq_ranges(t, 0, 1, first, count, 1));
    CHECK_EQ(first[0], 0);
    CHECK_EQ(count[0], 1);
    CHECK_STATUS(sb_tree_seq_ranges(t, 0, 0, first, count, 1), SB_STATUS_CAPACITY);

    CHECK_OK(sb_verify_greedy(t, argmax, 1, &acc));
    CHECK_EQ(acc.n_accepted, 0);
    CHECK_EQ(acc.bonus_token, 9);
    CHECK_EQ(acc.n_keep, 1);
    CHECK_EQ(acc.keep[0], 0);
    {
        float logits[4] = {0.0f, -INFINITY, 3.0f, -INFINITY};
        sb_sampling sm = sb_sampling_default();
        sm.top_k = 1;
        CHECK_OK(sb_verify_sample(t, logits, 1, 4, &sm, 7, &acc));
        CHECK_EQ(acc.n_accepted, 0);
        CHECK_EQ(acc.bonus_token, 2);
    }
    sb_tree_free(t);
}

/*
 * Dedup. Insertion (id: parent, token, logprob -> cum):
 *   1 A: 0, 5, -1.0  -> -1.0
 *   2 C: 1, 8, -0.4  (child of A, present before B arrives: B adopts it)
 *   3 B: 0, 5, -0.5  -> -0.5  same parent and token as A, higher: B survives
 *   4 D: 3, 9, -0.2  -> -0.7
 *   5 E: 1, 9, -0.05 (under A, resolves to B; duplicates D with -1.05 < -0.7: merges into D)
 *   6 F: 5, 3, -0.1  (under E: moves under D)
 *   7 G: 0, 6, -2.0
 *   8 H: 0, 6, -2.0  exact tie with G: the earlier one (G) survives
 * Survivors: B, C, D, F, G. Finalized: 0 | 1=B 2=G | 3=D 4=C | 5=F (C ranks after D whether its cum is
 * taken relative to A or to B).
 */
static void test_dedup(void) {
    sb_tree *t = new_tree(16, 8);
    int32_t id[9], v[6];
    float cum[6];
    sb_accept acc;
    int i;

    CHECK_OK(sb_tree_reset(t, 7));
    CHECK_OK(sb_tree_add(t, 0, 5, -1.0f, &id[1]));
    CHECK_OK(sb_tree_add(t, id[1], 8, -0.4f, &id[2]));
    CHECK_OK(sb_tree_add(t, 0, 5, -0.5f, &id[3]));
    CHECK_OK(sb_tree_add(t, id[3], 9, -0.2f, &id[4]));
    CHECK_OK(sb_tree_add(t, id[1], 9, -0.05f, &id[5]));
    CHECK_OK(sb_tree_add(t, id[5], 3, -0.1f, &id[6]));
    CHECK_OK(sb_tree_add(t, 0, 6, -2.0f, &id[7]));
    CHECK_OK(sb_tree_add(t, 0, 6, -2.0f, &id[8]));
    for (i = 1; i <= 8; i++) CHECK_EQ(id[i], i); /* insertion ids are 1, 2, ... */
    CHECK_EQ(sb_tree_len(t), 9);

    CHECK_OK(sb_tree_finalize(t, 16));
    CHECK_EQ(sb_tree_len(t), 6);
    CHECK_OK(sb_tree_tokens(t, v, 6));
    CHECK_I32S(v, 7, 5, 6, 9, 8, 3);
    CHECK_OK(sb_tree_parents(t, v, 6));
    CHECK_I32S(v, -1, 0, 0, 1, 1, 3);
    CHECK_OK(sb_tree_depths(t, v, 6));
    CHECK_I32S(v, 0, 1, 1, 2, 2, 3);
    CHECK_OK(sb_tree_source_ids(t, v, 6));
    CHECK_I32S(v, 0, 3, 7, 4, 2, 6);
    CHECK_EQ(sb_tree_num_leaves(t), 3);
    CHECK_OK(sb_tree_cum_logprobs(t, cum, 6));
    CHECK(approx(cum[1], -0.5f)); /* the winner's own value */
    CHECK(approx(cum[2], -2.0f));
    CHECK(approx(cum[3], -0.7f));
    for (i = 1; i < 6; i++) CHECK(cum[i] <= 0.0f);

    /* The adopted child is reachable by greedy through the winner: root -5-> B -8-> C, bonus 42. */
    {
        const int32_t argmax[6] = {5, 8, 0, 0, 42, 0};
        CHECK_OK(sb_verify_greedy(t, argmax, 6, &acc));
        CHECK_EQ(acc.n_accepted, 2);
        CHECK_I32S(acc.nodes, 1, 4);
        CHECK_I32S(acc.tokens, 5, 8);
        CHECK_EQ(acc.bonus_token, 42);
    }
    /* ... and so is the merged grandchild: root -5-> B -9-> D -3-> F, bonus 1. */
    {
        const int32_t argmax[6] = {5, 9, 0, 3, 0, 1};
        CHECK_OK(sb_verify_greedy(t, argmax, 6, &acc));
        CHECK_EQ(acc.n_accepted, 3);
        CHECK_I32S(acc.nodes, 1, 3, 5);
        CHECK_I32S(acc.tokens, 5, 9, 3);
        CHECK_EQ(acc.bonus_token, 1);
        CHECK_I32S(acc.keep, 0, 1, 3, 5);
    }

    /* A later duplicate with a higher value wins even when it arrives last; children of both merge. */
    CHECK_OK(sb_tree_reset(t, 1));
    CHECK_OK(sb_tree_add(t, 0, 3, -2.0f, &id[1]));   /* a */
    CHECK_OK(sb_tree_add(t, id[1], 4, -0.1f, NULL)); /* child of a */
    CHECK_OK(sb_tree_add(t, 0, 3, -0.2f, &id[3]));   /* b: displaces a */
    CHECK_OK(sb_tree_add(t, id[3], 5, -0.3f, NULL)); /* child of b */
    CHECK_OK(sb_tree_finalize(t, 16));
    CHECK_EQ(sb_tree_len(t), 4);
    CHECK_OK(sb_tree_tokens(t, v, 4));
    CHECK(v[0] == 1 && v[1] == 3);
    CHECK((v[2] == 4 && v[3] == 5) || (v[2] == 5 && v[3] == 4));
    CHECK_OK(sb_tree_parents(t, v, 4));
    CHECK_I32S(v, -1, 0, 1, 1);
    CHECK_OK(sb_tree_source_ids(t, v, 4));
    CHECK_EQ(v[1], 3);
    sb_tree_free(t);
}

/*
 * Budget on the layout tree (cums: s1 -0.2, s2 -1.5, s3 -0.5, s4 -1.1, s5 -0.6, s6 -1.7): the best
 * `budget` nodes by cumulative log-probability, always with their ancestors.
 */
static void test_budget(void) {
    sb_tree *t = new_tree(16, 8);
    int32_t v[LT_N];
    uint32_t b;

    build_layout_tree(t);
    CHECK_OK(sb_tree_finalize(t, 3));
    CHECK_EQ(sb_tree_len(t), 4);
    CHECK_OK(sb_tree_tokens(t, v, 4));
    CHECK_I32S(v, 50, 10, 11, 13);
    CHECK_OK(sb_tree_parents(t, v, 4));
    CHECK_I32S(v, -1, 0, 1, 2);
    CHECK_OK(sb_tree_source_ids(t, v, 4));
    CHECK_I32S(v, 0, 1, 3, 5);
    CHECK_EQ(sb_tree_num_leaves(t), 1);
    CHECK_EQ(sb_tree_depth(t), 3);

    build_layout_tree(t);
    CHECK_OK(sb_tree_finalize(t, 4));
    CHECK_EQ(sb_tree_len(t), 5);
    CHECK_OK(sb_tree_tokens(t, v, 5));
    CHECK_I32S(v, 50, 10, 11, 12, 13);
    CHECK_OK(sb_tree_parents(t, v, 5));
    CHECK_I32S(v, -1, 0, 1, 1, 2);

    build_layout_tree(t);
    CHECK_OK(sb_tree_finalize(t, 5));
    CHECK_EQ(sb_tree_len(t), 6);
    CHECK_OK(sb_tree_tokens(t, v, 6));
    CHECK_I32S(v, 50, 10, 20, 11, 12, 13);
    CHECK_OK(sb_tree_parents(t, v, 6));
    CHECK_I32S(v, -1, 0, 0, 1, 1, 3);

    /* Budget 0 keeps only the root; budgets >= the node count keep everything. */
    build_layout_tree(t);
    CHECK_OK(sb_tree_finalize(t, 0));
    CHECK_EQ(sb_tree_len(t), 1);
    for (b = 6; b <= 16; b += 10) {
        build_layout_tree(t);
        CHECK_OK(sb_tree_finalize(t, b));
        CHECK_EQ(sb_tree_len(t), 7);
    }

    /* Re-finalizing with a smaller budget prunes the finalized tree further. */
    build_layout_tree(t);
    CHECK_OK(sb_tree_finalize(t, 6));
    CHECK_OK(sb_tree_finalize(t, 3));
    CHECK_EQ(sb_tree_len(t), 4);
    CHECK_OK(sb_tree_tokens(t, v, 4));
    CHECK_I32S(v, 50, 10, 11, 13);

    /* budget > max_nodes: CAPACITY, and the tree is still being built. */
    build_layout_tree(t);
    CHECK_STATUS(sb_tree_finalize(t, 17), SB_STATUS_CAPACITY);
    CHECK_EQ(sb_tree_is_finalized(t), 0);
    CHECK_EQ(sb_tree_len(t), 7);
    CHECK_OK(sb_tree_add(t, 0, 30, -3.0f, NULL));
    CHECK_OK(sb_tree_finalize(t, 16));
    CHECK_EQ(sb_tree_len(t), 8);

    /* Zero log-probabilities tie the cumulative values: parents still rank before children. */
    {
        int32_t p;
        CHECK_OK(sb_tree_reset(t, 0));
        CHECK_OK(sb_tree_add(t, 0, 1, 0.0f, &p));
        CHECK_OK(sb_tree_add(t, p, 2, 0.0f, NULL));
        CHECK_OK(sb_tree_add(t, 0, 3, 0.0f, NULL));
        CHECK_OK(sb_tree_finalize(t, 1));
        CHECK_OK(sb_tree_tokens(t, v, 2));
        CHECK_I32S(v, 0, 1);
        CHECK_OK(sb_tree_reset(t, 0));
        CHECK_OK(sb_tree_add(t, 0, 1, 0.0f, &p));
        CHECK_OK(sb_tree_add(t, p, 2, 0.0f, NULL));
        CHECK_OK(sb_tree_add(t, 0, 3, 0.0f, NULL));
        CHECK_OK(sb_tree_finalize(t, 2));
        CHECK_OK(sb_tree_tokens(t, v, 3));
        CHECK_I32S(v, 0, 1, 3); /* depth 1 before depth 2 at equal value */
    }

    /* A positive log-probability is treated as 0; -inf is a valid (impossible) candidate, ranked last. */
    {
        float cum[3];
        CHECK_OK(sb_tree_reset(t, 0));
        CHECK_OK(sb_tree_add(t, 0, 1, -INFINITY, NULL));
        CHECK_OK(sb_tree_add(t, 0, 2, 0.5f, NULL));
        CHECK_OK(sb_tree_finalize(t, 2));
        CHECK_OK(sb_tree_tokens(t, v, 3));
        CHECK_I32S(v, 0, 2, 1);
        CHECK_OK(sb_tree_cum_logprobs(t, cum, 3));
        CHECK(cum[1] == 0.0f);
        CHECK(isinf(cum[2]) && cum[2] < 0.0f);
        CHECK_OK(sb_tree_reset(t, 0));
        CHECK_OK(sb_tree_add(t, 0, 1, -INFINITY, NULL));
        CHECK_OK(sb_tree_add(t, 0, 2, -30.0f, NULL));
        CHECK_OK(sb_tree_finalize(t, 1));
        CHECK_OK(sb_tree_tokens(t, v, 2));
        CHECK_I32S(v, 0, 2);
    }
    sb_tree_free(t);
}

static void test_tree_errors(void) {
    sb_tree *t = new_tree(4, 2);
    int32_t id = SENTINEL_I32, a, b, v[6];

    /* Before the first reset. */
    CHECK_STATUS(sb_tree_add(t, 0, 1, -1.0f, &id), SB_STATUS_INVALID_STATE);
    CHECK_STATUS(sb_tree_finalize(t, 1), SB_STATUS_INVALID_STATE);
    CHECK_STATUS(sb_tree_tokens(t, v, 6), SB_STATUS_INVALID_STATE);
    CHECK_EQ(sb_tree_len(t), 0);
    CHECK_EQ(id, SENTINEL_I32);

    CHECK_STATUS(sb_tree_reset(t, -1), SB_STATUS_INVALID_ARGUMENT);
    CHECK_EQ(sb_tree_len(t), 0);
    CHECK_OK(sb_tree_reset(t, 1));
    CHECK_EQ(sb_tree_len(t), 1);

    /* Unknown parent. */
    CHECK_STATUS(sb_tree_add(t, -1, 2, -1.0f, &id), SB_STATUS_INVALID_NODE);
    CHECK_STATUS(sb_tree_add(t, 1, 2, -1.0f, &id), SB_STATUS_INVALID_NODE); /* == len */
    CHECK_STATUS(sb_tree_add(t, 1000, 2, -1.0f, &id), SB_STATUS_INVALID_NODE);
    CHECK_STATUS(sb_tree_add(t, INT32_MIN, 2, -1.0f, &id), SB_STATUS_INVALID_NODE);
    /* Negative token, bad log-probabilities. */
    CHECK_STATUS(sb_tree_add(t, 0, -1, -1.0f, &id), SB_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(sb_tree_add(t, 0, 2, NAN, &id), SB_STATUS_NON_FINITE);
    CHECK_STATUS(sb_tree_add(t, 0, 2, INFINITY, &id), SB_STATUS_NON_FINITE);
    CHECK_EQ(id, SENTINEL_I32); /* never written on error */
    CHECK_EQ(sb_tree_len(t), 1);

    /* The tree is still usable. */
    CHECK_OK(sb_tree_add(t, 0, 2, -0.5f, &a));
    CHECK_EQ(a, 1);
    CHECK_OK(sb_tree_add(t, a, 3, -0.5f, &b));
    CHECK_EQ(b, 2);
    CHECK_OK(sb_tree_add(t, 0, 4, -0.7f, NULL)); /* out_node may be NULL */

    /* Depth limit (max_depth 2). */
    CHECK_STATUS(sb_tree_add(t, b, 5, -0.1f, &id), SB_STATUS_DEPTH_LIMIT);
    CHECK_EQ(id, SENTINEL_I32);
    CHECK_EQ(sb_tree_len(t), 4);

    /* Arena full (max_nodes 4). */
    CHECK_OK(sb_tree_add(t, a, 6, -0.9f, &id));
    CHECK_EQ(id, 4);
    id = SENTINEL_I32;
    CHECK_STATUS(sb_tree_add(t, 0, 7, -0.1f, &id), SB_STATUS_CAPACITY);
    CHECK_EQ(id, SENTINEL_I32);
    CHECK_EQ(sb_tree_len(t), 5);

    /* Budget above max_nodes. */
    CHECK_STATUS(sb_tree_finalize(t, 5), SB_STATUS_CAPACITY);
    CHECK_STATUS(sb_tree_finalize(t, UINT32_MAX), SB_STATUS_CAPACITY);
    CHECK_EQ(sb_tree_is_finalized(t), 0);
    CHECK_OK(sb_tree_finalize(t, 4));
    CHECK_EQ(sb_tree_len(t), 5);
    CHECK_OK(sb_tree_tokens(t, v, 5));
    CHECK_I32S(v, 1, 2, 4, 3, 6); /* cums: 2 -0.5 | 4 -0.7 | 3 -1.0 | 6 -1.4 */

    /* Adding after finalize. */
    CHECK_STATUS(sb_tree_add(t, 0, 9, -0.1f, &id), SB_STATUS_INVALID_STATE);
    {
        sb_node_meta m = {1, 2, 3, 4};
        CHECK_STATUS(sb_tree_add_meta(t, 0, 9, -0.1f, m, &id), SB_STATUS_INVALID_STATE);
    }
    CHECK_EQ(id, SENTINEL_I32);
    /* A failed reset leaves the finalized tree as it was. */
    CHECK_STATUS(sb_tree_reset(t, -5), SB_STATUS_INVALID_ARGUMENT);
    CHECK_EQ(sb_tree_is_finalized(t), 1);
    CHECK_EQ(sb_tree_len(t), 5);
    CHECK_OK(sb_tree_tokens(t, v, 5));
    CHECK_I32S(v, 1, 2, 4, 3, 6);

    /* Reset starts over. */
    CHECK_OK(sb_tree_reset(t, 8));
    CHECK_EQ(sb_tree_is_finalized(t), 0);
    CHECK_EQ(sb_tree_len(t), 1);
    CHECK_OK(sb_tree_add(t, 0, 9, -0.1f, &id));
    CHECK_EQ(id, 1);
    sb_tree_free(t);
}

/* Layouts and verification before finalize, with NULL outputs, and with buffers one element short. */
static void test_layout_errors(void) {
    sb_tree *t = new_tree(16, 8);
    int32_t i32buf[64], i32buf2[64];
    float fbuf[64];
    uint8_t u8buf[64];
    uint32_t u32buf[64];
    sb_node_meta mbuf[16];
    uint32_t rows = 12345;
    sb_accept acc;
    sb_sampling sm = sb_sampling_default();
    float logits[LT_N * 32];
    int32_t argmax[LT_N] = {0, 0, 0, 0, 0, 0, 0};
    int i;

    for (i = 0; i < LT_N * 32; i++) logits[i] = 0.0f;
    build_layout_tree(t); /* reset + 6 adds, not finalized */
    memset(i32buf, SENTINEL, sizeof i32buf);
    CHECK_STATUS(sb_tree_tokens(t, i32buf, 64), SB_STATUS_INVALID_STATE);
    CHECK_STATUS(sb_tree_parents(t, i32buf, 64), SB_STATUS_INVALID_STATE);
    CHECK_STATUS(sb_tree_depths(t, i32buf, 64), SB_STATUS_INVALID_STATE);
    CHECK_STATUS(sb_tree_positions(t, 3, i32buf, 64), SB_STATUS_INVALID_STATE);
    CHECK_STATUS(sb_tree_first_child(t, i32buf, 64), SB_STATUS_INVALID_STATE);
    CHECK_STATUS(sb_tree_next_sibling(t, i32buf, 64), SB_STATUS_INVALID_STATE);
    CHECK_STATUS(sb_tree_mask_dense(t, u8buf, 64), SB_STATUS_INVALID_STATE);
    CHECK_STATUS(sb_tree_mask_bias(t, fbuf, 64), SB_STATUS_INVALID_STATE);
    CHECK_STATUS(sb_tree_mask_bits(t, 0, u32buf, 64), SB_STATUS_INVALID_STATE);
    CHECK_STATUS(sb_tree_mask_flat_bits(t, 0, u8buf, 64), SB_STATUS_INVALID_STATE);
    CHECK_STATUS(sb_tree_retrieve_paths(t, 4, i32buf, 64, &rows), SB_STATUS_INVALID_STATE);
    CHECK_STATUS(sb_tree_seq_ranges(t, 0, 8, i32buf, i32buf2, 16), SB_STATUS_INVALID_STATE);
    CHECK_STATUS(sb_tree_cum_logprobs(t, fbuf, 64), SB_STATUS_INVALID_STATE);
    CHECK_STATUS(sb_tree_node_meta(t, mbuf, 16), SB_STATUS_INVALID_STATE);
    CHECK_STATUS(sb_tree_source_ids(t, i32buf, 64), SB_STATUS_INVALID_STATE);
    CHECK_STATUS(sb_verify_greedy(t, argmax, LT_N, &acc), SB_STATUS_INVALID_STATE);
    CHECK_STATUS(sb_verify_sample(t, logits, LT_N, 32, &sm, 1, &acc), SB_STATUS_INVALID_STATE);
    CHECK(all_bytes(i32buf, sizeof i32buf, SENTINEL));
    CHECK_EQ(rows, 12345);
    CHECK_EQ(sb_tree_mask_words_per_row(t, 0), 0);
    CHECK_EQ(sb_tree_mask_flat_bytes(t, 0), 0);
    CHECK_EQ(sb_tree_num_leaves(t), 0);
    CHECK_EQ(sb_tree_depth(t), 0);
    CHECK_EQ(sb_tree_len(t), 7);

    CHECK_OK(sb_tree_finalize(t, 16));

    /* NULL output with a non-zero capacity. */
    CHECK_STATUS(sb_tree_tokens(t, NULL, LT_N), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_tree_mask_dense(t, NULL, 49), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_tree_mask_bits(t, 0, NULL, 7), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_tree_retrieve_paths(t, 4, NULL, 12, &rows), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_tree_seq_ranges(t, 0, 8, NULL, i32buf2, LT_N), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_tree_seq_ranges(t, 0, 8, i32buf, NULL, LT_N), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_verify_greedy(t, argmax, LT_N, NULL), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_verify_greedy(t, NULL, LT_N, &acc), SB_STATUS_NULL_ARGUMENT);
    /* (NULL, 0) is an empty buffer: too small for a non-empty tree. */
    CHECK_STATUS(sb_tree_tokens(t, NULL, 0), SB_STATUS_BUFFER_TOO_SMALL);
    CHECK_STATUS(sb_tree_mask_dense(t, NULL, 0), SB_STATUS_BUFFER_TOO_SMALL);
    CHECK_EQ(rows, 12345);

    /* One element short: BUFFER_TOO_SMALL and not a byte written. Exactly enough plus slack: only the
     * needed elements are written. */
#define SHORT_THEN_OK(buf, need, call_with_cap)                                                     \
    do {                                                                                            \
        memset((buf), SENTINEL, sizeof(buf));                                                       \
        {                                                                                           \
            size_t cap_ = (size_t)(need) - 1;                                                       \
            CHECK_STATUS(call_with_cap, SB_STATUS_BUFFER_TOO_SMALL);                                \
        }                                                                                           \
        CHECK(all_bytes((buf), sizeof(buf), SENTINEL));                                             \
        {                                                                                           \
            size_t cap_ = (size_t)(need) + 3;                                                       \
            CHECK_OK(call_with_cap);                                                                \
        }                                                                                           \
        CHECK(all_bytes((const unsigned char *)(buf) + (need) * sizeof((buf)[0]),                   \
                        sizeof(buf) - (need) * sizeof((buf)[0]), SENTINEL));                        \
    } while (0)

    SHORT_THEN_OK(i32buf, LT_N, sb_tree_tokens(t, i32buf, (uint32_t)cap_));
    SHORT_THEN_OK(i32buf, LT_N, sb_tree_parents(t, i32buf, (uint32_t)cap_));
    SHORT_THEN_OK(i32buf, LT_N, sb_tree_depths(t, i32buf, (uint32_t)cap_));
    SHORT_THEN_OK(i32buf, LT_N, sb_tree_positions(t, 9, i32buf, (uint32_t)cap_));
    SHORT_THEN_OK(i32buf, LT_N, sb_tree_first_child(t, i32buf, (uint32_t)cap_));
    SHORT_THEN_OK(i32buf, LT_N, sb_tree_next_sibling(t, i32buf, (uint32_t)cap_));
    SHORT_THEN_OK(i32buf, LT_N, sb_tree_source_ids(t, i32buf, (uint32_t)cap_));
    SHORT_THEN_OK(fbuf, LT_N, sb_tree_cum_logprobs(t, fbuf, (uint32_t)cap_));
    SHORT_THEN_OK(mbuf, LT_N, sb_tree_node_meta(t, mbuf, (uint32_t)cap_));
    SHORT_THEN_OK(u8buf, LT_N * LT_N, sb_tree_mask_dense(t, u8buf, cap_));
    SHORT_THEN_OK(fbuf, LT_N * LT_N, sb_tree_mask_bias(t, fbuf, cap_));
    SHORT_THEN_OK(u32buf, LT_N, sb_tree_mask_bits(t, 0, u32buf, cap_));
    SHORT_THEN_OK(u32buf, LT_N * 2, sb_tree_mask_bits(t, 40, u32buf, cap_));
    SHORT_THEN_OK(u32buf, LT_N * 3, sb_tree_mask_bits(t, 60, u32buf, cap_));
    SHORT_THEN_OK(u8buf, 7, sb_tree_mask_flat_bits(t, 0, u8buf, cap_));
    SHORT_THEN_OK(u8buf, 9, sb_tree_mask_flat_bits(t, 3, u8buf, cap_));
    SHORT_THEN_OK(i32buf, 12, sb_tree_retrieve_paths(t, 4, i32buf, cap_, NULL));
    SHORT_THEN_OK(i32buf, 18, sb_tree_retrieve_paths(t, 6, i32buf, cap_, NULL));
    /* Both sequence buffers hold cap entries. */
    memset(i32buf, SENTINEL, sizeof i32buf);
    memset(i32buf2, SENTINEL, sizeof i32buf2);
    CHECK_STATUS(sb_tree_seq_ranges(t, 0, 8, i32buf, i32buf2, LT_N - 1), SB_STATUS_BUFFER_TOO_SMALL);
    CHECK(all_bytes(i32buf, sizeof i32buf, SENTINEL) && all_bytes(i32buf2, sizeof i32buf2, SENTINEL));
    CHECK_OK(sb_tree_seq_ranges(t, 0, 8, i32buf, i32buf2, LT_N + 3));
    CHECK(all_bytes(i32buf + LT_N, sizeof i32buf - LT_N * 4, SENTINEL));
    CHECK(all_bytes(i32buf2 + LT_N, sizeof i32buf2 - LT_N * 4, SENTINEL));
#undef SHORT_THEN_OK

    /* Retrieve paths: a row narrower than depth + 1 (4) is too small, whatever the capacity. */
    memset(i32buf, SENTINEL, sizeof i32buf);
    rows = 12345;
    CHECK_STATUS(sb_tree_retrieve_paths(t, 3, i32buf, 64, &rows), SB_STATUS_BUFFER_TOO_SMALL);
    CHECK_STATUS(sb_tree_retrieve_paths(t, 0, i32buf, 64, &rows), SB_STATUS_BUFFER_TOO_SMALL);
    CHECK_STATUS(sb_tree_retrieve_paths(t, 4, i32buf, 11, &rows), SB_STATUS_BUFFER_TOO_SMALL);
    CHECK(all_bytes(i32buf, sizeof i32buf, SENTINEL));
    CHECK_EQ(rows, 12345);
    CHECK_OK(sb_tree_retrieve_paths(t, 4, i32buf, 12, &rows));
    CHECK_EQ(rows, 3);
    CHECK_I32S(i32buf, 0, 1, 3, 6, 0, 1, 4, -1, 0, 2, 5, -1);
    sb_tree_free(t);
}

static void test_verify_errors(void) {
    enum { V = 32 };
    sb_tree *t = new_tree(16, 8);
    float logits[LT_N * V];
    int32_t argmax[LT_N + 1] = {10, 12, 0, 0, 99, 0, 0, 0};
    sb_sampling sm = sb_sampling_default(), bad;
    sb_accept acc, ref;
    int i;

    build_layout_tree(t);
    CHECK_OK(sb_tree_finalize(t, 16));
    /* Logits that put (almost) all mass on the path 10 -> 12 -> bonus 7. Root token 50 >= V is fine:
     * only draft tokens must be inside the vocabulary. */
    for (i = 0; i < LT_N * V; i++) logits[i] = 0.0f;
    logits[0 * V + 10] = 60.0f;
    logits[1 * V + 12] = 60.0f;
    logits[4 * V + 7] = 60.0f;
    CHECK_OK(sb_verify_sample(t, logits, LT_N, V, &sm, 3, &ref));
    CHECK_EQ(ref.n_accepted, 2);
    CHECK_I32S(ref.nodes, 1, 4);
    CHECK_EQ(ref.bonus_token, 7);

    /* Greedy: n != tree length, negative argmax; the output is never written on error. */
    memset(&acc, SENTINEL, sizeof acc);
    CHECK_STATUS(sb_verify_greedy(t, argmax, LT_N - 1, &acc), SB_STATUS_SHAPE_MISMATCH);
    CHECK_STATUS(sb_verify_greedy(t, argmax, LT_N + 1, &acc), SB_STATUS_SHAPE_MISMATCH);
    CHECK_STATUS(sb_verify_greedy(t, argmax, 0, &acc), SB_STATUS_SHAPE_MISMATCH);
    CHECK_STATUS(sb_verify_greedy(t, NULL, 0, &acc), SB_STATUS_SHAPE_MISMATCH);
    argmax[5] = -1;
    CHECK_STATUS(sb_verify_greedy(t, argmax, LT_N, &acc), SB_STATUS_INVALID_ARGUMENT);
    argmax[5] = 0;
    CHECK(all_bytes(&acc, sizeof acc, SENTINEL));
    CHECK_OK(sb_verify_greedy(t, argmax, LT_N, &acc));
    CHECK_EQ(acc.n_accepted, 2);
    CHECK_EQ(acc.bonus_token, 99);

    /* Sampling: NULL arguments. */
    memset(&acc, SENTINEL, sizeof acc);
    CHECK_STATUS(sb_verify_sample(t, NULL, LT_N, V, &sm, 3, &acc), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_verify_sample(t, logits, LT_N, V, NULL, 3, &acc), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_verify_sample(t, logits, LT_N, V, &sm, 3, NULL), SB_STATUS_NULL_ARGUMENT);
    /* struct_size. */
    bad = sm;
    bad.struct_size = 0;
    CHECK_STATUS(sb_verify_sample(t, logits, LT_N, V, &bad, 3, &acc), SB_STATUS_STRUCT_SIZE);
    bad.struct_size = (uint32_t)sizeof(sb_sampling) + 4;
    CHECK_STATUS(sb_verify_sample(t, logits, LT_N, V, &bad, 3, &acc), SB_STATUS_STRUCT_SIZE);
    /* Shapes. */
    CHECK_STATUS(sb_verify_sample(t, logits, LT_N - 1, V, &sm, 3, &acc), SB_STATUS_SHAPE_MISMATCH);
    CHECK_STATUS(sb_verify_sample(t, logits, 1, V, &sm, 3, &acc), SB_STATUS_SHAPE_MISMATCH);
    /* Vocabulary. */
    CHECK_STATUS(sb_verify_sample(t, logits, LT_N, 0, &sm, 3, &acc), SB_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(sb_verify_sample(t, logits, LT_N, 16, &sm, 3, &acc), SB_STATUS_TOKEN_OUT_OF_RANGE);
    CHECK_STATUS(sb_verify_sample(t, logits, LT_N, 21, &sm, 3, &acc), SB_STATUS_TOKEN_OUT_OF_RANGE);
    /* Sampling parameters. */
    bad = sm;
    bad.temperature = -0.5f;
    CHECK_STATUS(sb_verify_sample(t, logits, LT_N, V, &bad, 3, &acc), SB_STATUS_INVALID_ARGUMENT);
    bad.temperature = NAN;
    CHECK_STATUS(sb_verify_sample(t, logits, LT_N, V, &bad, 3, &acc), SB_STATUS_INVALID_ARGUMENT);
    bad.temperature = INFINITY;
    CHECK_STATUS(sb_verify_sample(t, logits, LT_N, V, &bad, 3, &acc), SB_STATUS_INVALID_ARGUMENT);
    bad = sm;
    bad.top_p = 0.0f;
    CHECK_STATUS(sb_verify_sample(t, logits, LT_N, V, &bad, 3, &acc), SB_STATUS_INVALID_ARGUMENT);
    bad.top_p = 1.5f;
    CHECK_STATUS(sb_verify_sample(t, logits, LT_N, V, &bad, 3, &acc), SB_STATUS_INVALID_ARGUMENT);
    bad.top_p = -0.1f;
    CHECK_STATUS(sb_verify_sample(t, logits, LT_N, V, &bad, 3, &acc), SB_STATUS_INVALID_ARGUMENT);
    bad.top_p = NAN;
    CHECK_STATUS(sb_verify_sample(t, logits, LT_N, V, &bad, 3, &acc), SB_STATUS_INVALID_ARGUMENT);
    bad = sm;
    bad.top_k = -1;
    CHECK_STATUS(sb_verify_sample(t, logits, LT_N, V, &bad, 3, &acc), SB_STATUS_INVALID_ARGUMENT);
    bad.top_k = INT32_MIN;
    CHECK_STATUS(sb_verify_sample(t, logits, LT_N, V, &bad, 3, &acc), SB_STATUS_INVALID_ARGUMENT);
    CHECK(all_bytes(&acc, sizeof acc, SENTINEL));

    /* Non-finite logits in a visited row (row 0 always is). */
    logits[0 * V + 3] = NAN;
    CHECK_STATUS(sb_verify_sample(t, logits, LT_N, V, &sm, 3, &acc), SB_STATUS_NON_FINITE);
    sm.temperature = 0.0f;
    CHECK_STATUS(sb_verify_sample(t, logits, LT_N, V, &sm, 3, &acc), SB_STATUS_NON_FINITE);
    sm.temperature = 1.0f;
    logits[0 * V + 3] = INFINITY;
    CHECK_STATUS(sb_verify_sample(t, logits, LT_N, V, &sm, 3, &acc), SB_STATUS_NON_FINITE);
    logits[0 * V + 3] = 0.0f;
    /* ... in row 4 (visited: the walk accepts 10 then 12 = node 4). */
    logits[4 * V + 30] = NAN;
    CHECK_STATUS(sb_verify_sample(t, logits, LT_N, V, &sm, 3, &acc), SB_STATUS_NON_FINITE);
    CHECK(all_bytes(&acc, sizeof acc, SENTINEL));
    /* ... in rows the walk never visits (2, 3, 5, 6): ignored. */
    logits[4 * V + 30] = 0.0f;
    logits[2 * V + 1] = NAN;
    logits[3 * V + 1] = INFINITY;
    logits[6 * V + 1] = NAN;
    CHECK_OK(sb_verify_sample(t, logits, LT_N, V, &sm, 3, &acc));
    CHECK(memcmp(&acc, &ref, sizeof acc) == 0);
    logits[2 * V + 1] = 0.0f;
    logits[3 * V + 1] = 0.0f;
    logits[6 * V + 1] = 0.0f;

    /* A visited row that is entirely -inf gives no token positive probability. */
    {
        float saved[V];
        memcpy(saved, logits, sizeof saved);
        for (i = 0; i < V; i++) logits[i] = -INFINITY;
        memset(&acc, SENTINEL, sizeof acc);
        CHECK_STATUS(sb_verify_sample(t, logits, LT_N, V, &sm, 3, &acc), SB_STATUS_INVALID_ARGUMENT);
        CHECK(all_bytes(&acc, sizeof acc, SENTINEL));
        /* -inf on single tokens is a mask: only token 5 is possible after the root. */
        for (i = 0; i < V; i++) logits[i] = -INFINITY;
        logits[5] = -3.0f;
        CHECK_OK(sb_verify_sample(t, logits, LT_N, V, &sm, 3, &acc));
        CHECK_EQ(acc.n_accepted, 0);
        CHECK_EQ(acc.bonus_token, 5);
        memcpy(logits, saved, sizeof saved);
    }

    /* After all of that the tree gives the same answer as before. */
    CHECK_OK(sb_verify_sample(t, logits, LT_N, V, &sm, 3, &acc));
    CHECK(memcmp(&acc, &ref, sizeof acc) == 0);
    CHECK_EQ(sb_tree_len(t), LT_N);
    sb_tree_free(t);
}

static int argmax_lowest(const float *row, int vocab) {
    int j, best = 0;
    for (j = 1; j < vocab; j++) {
        if (row[j] > row[best]) best = j;
    }
    return best;
}

static void test_sampling_determinism_and_greedy_equivalence(void) {
    enum { V = 32 };
    sb_tree *t = new_tree(16, 8);
    float logits[LT_N * V];
    int32_t argmax[LT_N];
    sb_sampling sm = sb_sampling_default();
    sb_accept a, b, g;
    int i, r, trial, distinct = 0;
    uint64_t seed;

    build_layout_tree(t);
    CHECK_OK(sb_tree_finalize(t, 16));

    for (trial = 0; trial < 20; trial++) {
        /* Random logits, with the draft tokens made likely so that acceptance happens. */
        for (i = 0; i < LT_N * V; i++) logits[i] = lcg_unit() * 4.0f - 2.0f;
        logits[0 * V + 10] += 2.0f;
        logits[1 * V + 11] += 2.0f;
        logits[3 * V + 13] += 2.0f;
        for (r = 0; r < LT_N; r++) argmax[r] = argmax_lowest(logits + r * V, V);

        /* Same seed, same result, bit for bit. */
        sm = sb_sampling_default();
        sm.temperature = 0.8f;
        sm.top_k = 8;
        sm.top_p = 0.95f;
        seed = 1000 + (uint64_t)trial;
        CHECK_OK(sb_verify_sample(t, logits, LT_N, V, &sm, seed, &a));
        CHECK_OK(sb_verify_sample(t, logits, LT_N, V, &sm, seed, &b));
        CHECK(memcmp(&a, &b, sizeof a) == 0);

        /* Temperature 0 is greedy on the argmax of the same logits. */
        sm.temperature = 0.0f;
        CHECK_OK(sb_verify_sample(t, logits, LT_N, V, &sm, seed, &a));
        CHECK_OK(sb_verify_greedy(t, argmax, LT_N, &g));
        CHECK(memcmp(&a, &g, sizeof a) == 0);
        /* So is top_k = 1 (unique maxima), and a top_p small enough to keep only the most likely token. */
        sm.temperature = 0.8f;
        sm.top_k = 1;
        CHECK_OK(sb_verify_sample(t, logits, LT_N, V, &sm, seed, &a));
        CHECK(memcmp(&a, &g, sizeof a) == 0);
        sm.top_k = 0;
        sm.top_p = 1e-6f;
        CHECK_OK(sb_verify_sample(t, logits, LT_N, V, &sm, seed, &a));
        CHECK(memcmp(&a, &g, sizeof a) == 0);
    }

    /* Temperature 0 breaks argmax ties towards the lowest token id. */
    for (i = 0; i < LT_N * V; i++) logits[i] = 0.0f;
    logits[0 * V + 20] = 5.0f; /* tie between 20 (node 2) and 25 after the root: 20 wins */
    logits[0 * V + 25] = 5.0f;
    logits[2 * V + 21] = 1.0f; /* then 21 (node 5) */
    logits[5 * V + 4] = 2.0f; /* tie between 4 and 9 after node 5: bonus 4 */
    logits[5 * V + 9] = 2.0f;
    sm = sb_sampling_default();
    sm.temperature = 0.0f;
    CHECK_OK(sb_verify_sample(t, logits, LT_N, V, &sm, 5, &a));
    CHECK_EQ(a.n_accepted, 2);
    CHECK_I32S(a.nodes, 2, 5);
    CHECK_I32S(a.tokens, 20, 21);
    CHECK_EQ(a.bonus_token, 4);

    /* Different seeds give different results on a genuinely random row. */
    for (i = 0; i < LT_N * V; i++) logits[i] = 0.0f;
    sm = sb_sampling_default();
    CHECK_OK(sb_verify_sample(t, logits, LT_N, V, &sm, 0, &b));
    for (seed = 1; seed < 50; seed++) {
        CHECK_OK(sb_verify_sample(t, logits, LT_N, V, &sm, seed, &a));
        distinct += memcmp(&a, &b, sizeof a) != 0;
    }
    CHECK(distinct >= 40);
    sb_tree_free(t);
}

/* Sampling facts that hold for every seed, and frequencies over many seeds. */
static void test_sampling_distribution(void) {
    enum { V = 32 };
    sb_tree *t = new_tree(16, 8);
    float logits[LT_N * V];
    sb_sampling sm = sb_sampling_default();
    sb_accept a;
    int i, seen[V];
    uint64_t seed;

    build_layout_tree(t);
    CHECK_OK(sb_tree_finalize(t, 16));

    /* A child with (numerically) all the mass is accepted for every seed. */
    for (i = 0; i < LT_N * V; i++) logits[i] = 0.0f;
    logits[0 * V + 10] = 50.0f;
    logits[1 * V + 12] = 50.0f;
    logits[4 * V + 7] = 50.0f;
    {
        int all_ok = 1;
        for (seed = 0; seed < 100; seed++) {
            CHECK_OK(sb_verify_sample(t, logits, LT_N, V, &sm, seed, &a));
            all_ok &= a.n_accepted == 2 && a.nodes[0] == 1 && a.nodes[1] == 4 && a.bonus_token == 7 &&
                      a.n_keep == 3 && a.keep[0] == 0 && a.keep[1] == 1 && a.keep[2] == 4;
        }
        CHECK(all_ok);
    }

    /* Masked children (-inf) are never accepted and never emitted; every other token is. */
    for (i = 0; i < LT_N * V; i++) logits[i] = 0.0f;
    logits[0 * V + 10] = -INFINITY;
    logits[0 * V + 20] = -INFINITY;
    memset(seen, 0, sizeof seen);
    {
        int none_accepted = 1;
        for (seed = 0; seed < 1500; seed++) {
            CHECK_OK(sb_verify_sample(t, logits, LT_N, V, &sm, seed, &a));
            none_accepted &= a.n_accepted == 0 && a.bonus_token >= 0 && a.bonus_token < V;
            if (a.bonus_token >= 0 && a.bonus_token < V) seen[a.bonus_token]++;
        }
        CHECK(none_accepted);
        CHECK_EQ(seen[10], 0);
        CHECK_EQ(seen[20], 0);
        for (i = 0; i < V; i++) {
            if (i != 10 && i != 20) CHECK(seen[i] > 0);
        }
    }
    sb_tree_free(t);

    /*
     * Losslessness on a one-level tree: root children 2 (draft-likelier, node 1) and 3 (node 2); target
     * p = [0.1, 0.2, 0.4, 0.3] at temperature 1. The first emitted token (accepted child or bonus) must be
     * distributed as p. 4000 seeds: standard error <= 0.008, tolerance 0.035.
     */
    {
        sb_tree *u = new_tree(4, 2);
        float lg[3 * 4];
        int counts[4] = {0, 0, 0, 0}, accepted[3] = {0, 0, 0}, bad = 0;
        const int n = 4000;
        static const float p[4] = {0.1f, 0.2f, 0.4f, 0.3f};
        CHECK_OK(sb_tree_reset(u, 0));
        CHECK_OK(sb_tree_add(u, 0, 2, -0.1f, NULL));
        CHECK_OK(sb_tree_add(u, 0, 3, -0.5f, NULL));
        CHECK_OK(sb_tree_finalize(u, 4));
        for (i = 0; i < 4; i++) {
            lg[i] = logf(p[i]);
            lg[4 + i] = 0.0f;
            lg[8 + i] = 0.0f;
        }
        sm = sb_sampling_default();
        for (seed = 0; seed < (uint64_t)n; seed++) {
            CHECK_OK(sb_verify_sample(u, lg, 3, 4, &sm, seed, &a));
            if (a.n_accepted > 0) {
                counts[a.tokens[0]]++;
                accepted[a.nodes[0]]++;
            } else {
                counts[a.bonus_token]++;
                bad += a.bonus_token == 2 || a.bonus_token == 3; /* children are excluded from the residual */
            }
        }
        CHECK_EQ(bad, 0);
        CHECK_EQ(accepted[1], counts[2]);
        CHECK_EQ(accepted[2], counts[3]);
        for (i = 0; i < 4; i++) {
            double f = (double)counts[i] / n;
            if (fabs(f - p[i]) > 0.035) fprintf(stderr, "token %d: frequency %.4f, want %.2f\n", i, f, p[i]);
            CHECK(fabs(f - p[i]) <= 0.035);
        }

        /* Temperature 0.5 squares the probabilities: [0.01, 0.04, 0.16, 0.09] / 0.3 -> p(3) = 0.3. */
        sm.temperature = 0.5f;
        counts[3] = 0;
        for (seed = 0; seed < (uint64_t)n; seed++) {
            CHECK_OK(sb_verify_sample(u, lg, 3, 4, &sm, seed, &a));
            if ((a.n_accepted > 0 ? a.tokens[0] : a.bonus_token) == 3) counts[3]++;
        }
        CHECK(fabs((double)counts[3] / n - 0.3) <= 0.035);

        /* top_p 0.5 keeps {2, 3} (0.4 + 0.3 >= 0.5): 0 and 1 are never emitted, p(3) = 3/7. */
        sm = sb_sampling_default();
        sm.top_p = 0.5f;
        {
            int low = 0, n3 = 0;
            for (seed = 0; seed < (uint64_t)n; seed++) {
                int first;
                CHECK_OK(sb_verify_sample(u, lg, 3, 4, &sm, seed, &a));
                first = a.n_accepted > 0 ? a.tokens[0] : a.bonus_token;
                low += first == 0 || first == 1;
                n3 += first == 3;
            }
            CHECK_EQ(low, 0);
            CHECK(fabs((double)n3 / n - 3.0 / 7.0) <= 0.035);
        }
        sb_tree_free(u);
    }

    /* top_k keeps ties at the boundary: three tokens share the maximum, top_k = 1 keeps all three. */
    {
        sb_tree *u = new_tree(4, 2);
        float lg[2 * 8];
        int counts[8] = {0}, k, others = 0;
        const int n = 1200;
        CHECK_OK(sb_tree_reset(u, 0));
        CHECK_OK(sb_tree_add(u, 0, 4, -0.1f, NULL));
        CHECK_OK(sb_tree_finalize(u, 4));
        for (i = 0; i < 16; i++) lg[i] = 0.0f;
        lg[1] = lg[4] = lg[6] = 2.0f;
        sm = sb_sampling_default();
        sm.top_k = 1;
        for (seed = 0; seed < (uint64_t)n; seed++) {
            CHECK_OK(sb_verify_sample(u, lg, 2, 8, &sm, seed, &a));
            counts[a.n_accepted > 0 ? a.tokens[0] : a.bonus_token]++;
        }
        for (k = 0; k < 8; k++) {
            if (k == 1 || k == 4 || k == 6) {
                CHECK(fabs((double)counts[k] / n - 1.0 / 3.0) <= 0.06);
            } else {
                others += counts[k];
            }
        }
        CHECK_EQ(others, 0);
        sb_tree_free(u);
    }

    /*
     * A vocabulary larger than the library's internal sampling chunk (1024): only tokens 7, 1023, 1024,
     * 1030, 2049, 2499 are possible (equal logits); the children are 1030 and 2049. Each possible token is
     * emitted first with probability 1/6, nothing else ever is.
     */
    {
        enum { BV = 2500 };
        static float rows3[3 * BV];
        static const int possible[6] = {7, 1023, 1024, 1030, 2049, 2499};
        int counts[6] = {0}, other = 0, k;
        const int n = 600;
        sb_tree *u = new_tree(4, 2);
        CHECK_OK(sb_tree_reset(u, 1));
        CHECK_OK(sb_tree_add(u, 0, 1030, -0.2f, NULL));
        CHECK_OK(sb_tree_add(u, 0, 2049, -0.3f, NULL));
        CHECK_OK(sb_tree_finalize(u, 4));
        for (i = 0; i < 3 * BV; i++) rows3[i] = -INFINITY;
        for (k = 0; k < 6; k++) rows3[possible[k]] = 1.5f;
        rows3[1 * BV] = 0.0f; /* after either child (both leaves) only token 0 is possible */
        rows3[2 * BV] = 0.0f;
        sm = sb_sampling_default();
        for (seed = 0; seed < (uint64_t)n; seed++) {
            int first, hit = 0;
            CHECK_OK(sb_verify_sample(u, rows3, 3, BV, &sm, seed, &a));
            first = a.n_accepted > 0 ? a.tokens[0] : a.bonus_token;
            for (k = 0; k < 6; k++) {
                if (first == possible[k]) {
                    counts[k]++;
                    hit = 1;
                }
            }
            other += !hit;
            if (a.n_accepted > 0) other += a.bonus_token != 0;
        }
        CHECK_EQ(other, 0);
        for (k = 0; k < 6; k++) CHECK(fabs((double)counts[k] / n - 1.0 / 6.0) <= 0.07);
        sb_tree_free(u);
    }
}

/* The deepest tree the API allows: a chain of SB_MAX_DEPTH nodes, all accepted. */
static void test_full_depth_chain(void) {
    sb_tree *t = new_tree(100, SB_MAX_DEPTH);
    int32_t parent = 0, id = 0, argmax[SB_MAX_DEPTH + 1], paths[SB_MAX_DEPTH + 1];
    uint32_t bits[(SB_MAX_DEPTH + 1) * 3], rows = 0;
    sb_accept acc;
    int i, ok = 1;

    CHECK_OK(sb_tree_reset(t, 0));
    for (i = 1; i <= SB_MAX_DEPTH; i++) {
        CHECK_OK(sb_tree_add(t, parent, i, -0.01f, &id));
        parent = id;
    }
    CHECK_STATUS(sb_tree_add(t, parent, 999, -0.01f, NULL), SB_STATUS_DEPTH_LIMIT);
    CHECK_OK(sb_tree_finalize(t, SB_MAX_DEPTH));
    CHECK_EQ(sb_tree_len(t), SB_MAX_DEPTH + 1);
    CHECK_EQ(sb_tree_depth(t), SB_MAX_DEPTH);
    CHECK_EQ(sb_tree_num_leaves(t), 1);

    for (i = 0; i <= SB_MAX_DEPTH; i++) argmax[i] = i + 1;
    argmax[SB_MAX_DEPTH] = 999;
    CHECK_OK(sb_verify_greedy(t, argmax, SB_MAX_DEPTH + 1, &acc));
    CHECK_EQ(acc.n_accepted, SB_MAX_DEPTH);
    CHECK_EQ(acc.n_keep, SB_MAX_KEEP);
    CHECK_EQ(acc.bonus_token, 999);
    for (i = 0; i < SB_MAX_DEPTH; i++) ok &= acc.nodes[i] == i + 1 && acc.tokens[i] == i + 1;
    for (i = 0; i < SB_MAX_KEEP; i++) ok &= acc.keep[i] == i;
    CHECK(ok);

    /* The same through sampling with certain logits. */
    {
        enum { V = 70 };
        static float logits[(SB_MAX_DEPTH + 1) * V];
        sb_sampling sm = sb_sampling_default();
        sb_accept s;
        for (i = 0; i < (SB_MAX_DEPTH + 1) * V; i++) logits[i] = 0.0f;
        for (i = 0; i <= SB_MAX_DEPTH; i++) logits[i * V + (i < SB_MAX_DEPTH ? i + 1 : 69)] = 60.0f;
        CHECK_OK(sb_verify_sample(t, logits, SB_MAX_DEPTH + 1, V, &sm, 11, &s));
        CHECK_EQ(s.n_accepted, SB_MAX_DEPTH);
        CHECK_EQ(s.bonus_token, 69);
        CHECK_EQ(s.keep[SB_MAX_DEPTH], SB_MAX_DEPTH);
    }

    CHECK_OK(sb_tree_retrieve_paths(t, SB_MAX_DEPTH + 1, paths, SB_MAX_DEPTH + 1, &rows));
    CHECK_EQ(rows, 1);
    ok = 1;
    for (i = 0; i <= SB_MAX_DEPTH; i++) ok &= paths[i] == i;
    CHECK(ok);
    /* 65 columns: 3 words per row; the last row has every bit 0..64 set. */
    CHECK_EQ(sb_tree_mask_words_per_row(t, 0), 3);
    CHECK_OK(sb_tree_mask_bits(t, 0, bits, sizeof bits / sizeof bits[0]));
    CHECK_U32S(bits + SB_MAX_DEPTH * 3, 0xFFFFFFFFu, 0xFFFFFFFFu, 0x1);
    CHECK_U32S(bits + 32 * 3, 0xFFFFFFFFu, 0x1, 0x0);
    sb_tree_free(t);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Reuse: one tree, many random rounds                                                                  */
/* ---------------------------------------------------------------------------------------------------- */

enum { R_MAX = 48, R_DEPTH = 6, R_VOCAB = 64 };

/* Insertion-side data of a random round, for computing what finalize must keep. */
static float g_cum[R_MAX + 1];
static int32_t g_depth[R_MAX + 1];

/* Budget rank: cum desc, depth asc, insertion id asc. */
static int budget_cmp(const void *pa, const void *pb) {
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    if (g_cum[a] != g_cum[b]) return g_cum[a] > g_cum[b] ? -1 : 1;
    if (g_depth[a] != g_depth[b]) return g_depth[a] < g_depth[b] ? -1 : 1;
    return a < b ? -1 : (a > b);
}

static int i32_cmp(const void *pa, const void *pb) {
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    return a < b ? -1 : (a > b);
}

static void test_reuse_random_trees(void) {
    sb_tree *t = new_tree(R_MAX, R_DEPTH);
    int iter, fails_before = g_failed;

    for (iter = 0; iter < 1000 && g_failed - fails_before < 20; iter++) {
        /* Mode A (even rounds): tokens distinct among siblings, so nothing merges and the kept set is
         * exactly the best `budget` insertions. Mode B (odd): 3 tokens, lots of duplicates. */
        const int dedup_mode = iter & 1;
        const int added = (int)lcg_below(R_MAX + 1);
        const uint32_t budget = lcg_below(R_MAX + 1);
        int32_t parent_of[R_MAX + 1], token_of[R_MAX + 1], n_children[R_MAX + 1];
        int32_t code_of[R_MAX + 1]; /* token path encoded base 5 (tokens < 4), for dedup mode */
        int32_t tok[R_MAX + 1], par[R_MAX + 1], dep[R_MAX + 1], src[R_MAX + 1], fc[R_MAX + 1],
            ns[R_MAX + 1], argmax[R_MAX + 1];
        float cum[R_MAX + 1];
        static uint8_t dense[(R_MAX + 1) * (R_MAX + 1)];
        static float logits[(R_MAX + 1) * R_VOCAB];
        int32_t paths[(R_MAX + 1) * (R_DEPTH + 1)];
        uint32_t rows = 0;
        int k, i, j, n, structure_ok = 1;
        sb_accept a, b;
        sb_sampling sm = sb_sampling_default();

        CHECK_OK(sb_tree_reset(t, (int32_t)lcg_below(1000)));
        g_cum[0] = 0.0f;
        g_depth[0] = 0;
        code_of[0] = 0;
        n_children[0] = 0;
        for (k = 1; k <= added; k++) {
            int32_t p, id = -1;
            float lp;
            /* Parents at depth R_DEPTH cannot take children: pick again (root always can). */
            do {
                p = (int32_t)lcg_below((uint32_t)k);
            } while (g_depth[p] >= R_DEPTH);
            lp = (lcg_below(8) == 0) ? 0.0f : -(lcg_unit() * 3.0f) - 0.001f;
            token_of[k] = dedup_mode ? (int32_t)lcg_below(4) : n_children[p];
            n_children[p]++;
            n_children[k] = 0;
            parent_of[k] = p;
            g_cum[k] = g_cum[p] + lp;
            g_depth[k] = g_depth[p] + 1;
            code_of[k] = code_of[p] * 5 + token_of[k] + 1;
            CHECK_OK(sb_tree_add(t, p, token_of[k], lp, &id));
            if (id != k) {
                CHECK_EQ(id, k);
                break;
            }
        }
        CHECK_OK(sb_tree_finalize(t, budget));
        n = (int)sb_tree_len(t);

        CHECK_OK(sb_tree_tokens(t, tok, R_MAX + 1));
        CHECK_OK(sb_tree_parents(t, par, R_MAX + 1));
        CHECK_OK(sb_tree_depths(t, dep, R_MAX + 1));
        CHECK_OK(sb_tree_source_ids(t, src, R_MAX + 1));
        CHECK_OK(sb_tree_cum_logprobs(t, cum, R_MAX + 1));
        CHECK_OK(sb_tree_first_child(t, fc, R_MAX + 1));
        CHECK_OK(sb_tree_next_sibling(t, ns, R_MAX + 1));
        CHECK_OK(sb_tree_mask_dense(t, dense, sizeof dense));

        /* Structure: parents precede children, depths follow parents, finalize order, cum monotone,
         * sibling tokens distinct, dense mask = ancestor closure, child lists consistent. */
        structure_ok &= par[0] == -1 && dep[0] == 0 && src[0] == 0;
        for (i = 1; i < n; i++) {
            structure_ok &= par[i] >= 0 && par[i] < i;
            if (!(par[i] >= 0 && par[i] < i)) break;
            structure_ok &= dep[i] == dep[par[i]] + 1;
            structure_ok &= cum[i] <= cum[par[i]];
            if (i >= 2) {
                int ordered = dep[i - 1] < dep[i] ||
                              (dep[i - 1] == dep[i] &&
                               (cum[i - 1] > cum[i] || (cum[i - 1] == cum[i] && src[i - 1] < src[i])));
                structure_ok &= ordered;
            }
            for (j = 1; j < i; j++) structure_ok &= !(par[j] == par[i] && tok[j] == tok[i]);
            for (j = 0; j < n; j++) {
                uint8_t want = (uint8_t)(j == i ? 1 : dense[par[i] * n + j]);
                structure_ok &= dense[i * n + j] == want;
            }
        }
        {
            int leaves = 0;
            for (i = 0; i < n; i++) {
                int first = -1;
                for (j = i + 1; j < n; j++) {
                    if (par[j] == i) {
                        first = j;
                        break;
                    }
                }
                structure_ok &= fc[i] == first;
                leaves += fc[i] < 0;
                if (ns[i] >= 0) structure_ok &= ns[i] > i && par[ns[i]] == par[i];
            }
            structure_ok &= (int)sb_tree_num_leaves(t) == leaves;
            CHECK_OK(sb_tree_retrieve_paths(t, R_DEPTH + 1, paths, sizeof paths / sizeof paths[0], &rows));
            structure_ok &= (int)rows == leaves;
            for (i = 0; i < (int)rows && i < R_MAX + 1; i++) {
                const int32_t *row = paths + i * (R_DEPTH + 1);
                int d = 0;
                while (d + 1 <= R_DEPTH && row[d + 1] >= 0) d++;
                structure_ok &= row[0] == 0 && fc[row[d]] < 0;
                for (j = 1; j <= d; j++) structure_ok &= par[row[j]] == row[j - 1];
                for (j = d + 1; j <= R_DEPTH; j++) structure_ok &= row[j] == -1;
            }
        }
        CHECK(structure_ok);

        if (!dedup_mode) {
            /* Nothing merges: the kept set is the best min(budget, added) by (cum, depth, id). */
            int32_t ids[R_MAX], kept[R_MAX + 1];
            const int want = (int)budget < added ? (int)budget : added;
            CHECK_EQ(n, want + 1);
            for (k = 0; k < added; k++) ids[k] = k + 1;
            qsort(ids, (size_t)added, sizeof ids[0], budget_cmp);
            qsort(ids, (size_t)want, sizeof ids[0], i32_cmp);
            for (i = 1; i < n; i++) kept[i - 1] = src[i];
            qsort(kept, (size_t)(n - 1), sizeof kept[0], i32_cmp);
            CHECK(n == want + 1 && memcmp(ids, kept, sizeof ids[0] * (size_t)want) == 0);
            /* Kept nodes carry their insertion data. */
            for (i = 1; i < n; i++) {
                structure_ok &= tok[i] == token_of[src[i]] && cum[i] == g_cum[src[i]] &&
                                dep[i] == g_depth[src[i]] && src[par[i]] == parent_of[src[i]];
            }
            CHECK(structure_ok);
        } else {
            /* Dedup: the finalized token paths are the distinct inserted token paths (all of them when the
             * budget allows, else exactly `budget` of them). */
            int32_t want_codes[R_MAX], got_codes[R_MAX + 1], code[R_MAX + 1];
            int live = 0;
            for (k = 0; k < added; k++) want_codes[k] = code_of[k + 1];
            qsort(want_codes, (size_t)added, sizeof want_codes[0], i32_cmp);
            for (k = 0; k < added; k++) {
                if (k == 0 || want_codes[k] != want_codes[k - 1]) want_codes[live++] = want_codes[k];
            }
            code[0] = 0;
            for (i = 1; i < n; i++) {
                code[i] = code[par[i]] * 5 + tok[i] + 1;
                got_codes[i - 1] = code[i];
            }
            qsort(got_codes, (size_t)(n - 1), sizeof got_codes[0], i32_cmp);
            if ((int)budget >= live) {
                CHECK_EQ(n, live + 1);
                CHECK(n == live + 1 && memcmp(want_codes, got_codes, sizeof got_codes[0] * (size_t)live) == 0);
            } else {
                CHECK_EQ(n, (int)budget + 1);
            }
        }

        /* Greedy: follow mostly-drafted argmaxes; the result must be a valid walk. */
        for (i = 0; i < n; i++) {
            argmax[i] = (fc[i] >= 0 && lcg_below(10) < 7) ? tok[fc[i]] : (int32_t)lcg_below(R_VOCAB);
            if (fc[i] >= 0 && ns[fc[i]] >= 0 && lcg_below(2)) argmax[i] = tok[ns[fc[i]]];
        }
        CHECK_OK(sb_verify_greedy(t, argmax, (uint32_t)n, &a));
        {
            int ok = a.n_keep == a.n_accepted + 1 && a.keep[0] == 0, prev = 0, c;
            for (k = 0; k < (int)a.n_accepted && ok; k++) {
                const int node = a.nodes[k];
                ok &= node > 0 && node < n && par[node] == prev && tok[node] == a.tokens[k] &&
                      argmax[prev] == tok[node] && a.keep[k + 1] == node;
                prev = node;
            }
            ok &= a.bonus_token == argmax[prev];
            for (c = fc[prev]; c >= 0 && ok; c = ns[c]) ok &= tok[c] != a.bonus_token;
            CHECK(ok);
        }

        /* Sampling (top-k 8): deterministic per seed, accepted tokens and the bonus inside the top-k. */
        for (i = 0; i < n * R_VOCAB; i++) logits[i] = lcg_unit() * 6.0f - 3.0f;
        for (i = 0; i < n; i++) {
            if (fc[i] >= 0) logits[i * R_VOCAB + tok[fc[i]]] += 3.0f;
        }
        sm.temperature = 0.5f + lcg_unit();
        sm.top_k = 8;
        CHECK_OK(sb_verify_sample(t, logits, (uint32_t)n, R_VOCAB, &sm, (uint64_t)iter, &a));
        CHECK_OK(sb_verify_sample(t, logits, (uint32_t)n, R_VOCAB, &sm, (uint64_t)iter, &b));
        CHECK(memcmp(&a, &b, sizeof a) == 0);
        {
            int ok = a.n_keep == a.n_accepted + 1, prev = 0, c;
            for (k = 0; k <= (int)a.n_accepted && ok; k++) {
                const float *row = logits + prev * R_VOCAB;
                const int32_t emitted = k < (int)a.n_accepted ? a.tokens[k] : a.bonus_token;
                int above = 0;
                ok &= emitted >= 0 && emitted < R_VOCAB;
                if (!ok) break;
                for (j = 0; j < R_VOCAB; j++) above += row[j] > row[emitted];
                ok &= above < 8; /* inside the top-k set */
                if (k < (int)a.n_accepted) {
                    const int node = a.nodes[k];
                    ok &= node > 0 && node < n && par[node] == prev && tok[node] == emitted;
                    prev = node;
                }
            }
            /* The bonus after a non-leaf is never one of its children's tokens (those were rejected). */
            for (c = fc[prev]; c >= 0 && ok; c = ns[c]) ok &= tok[c] != a.bonus_token;
            CHECK(ok);
        }
    }
    sb_tree_free(t);

    /* Many trees created and freed. */
    for (iter = 0; iter < 200; iter++) {
        sb_tree *u = new_tree(1 + lcg_below(300), 1 + lcg_below(SB_MAX_DEPTH));
        CHECK_OK(sb_tree_reset(u, 1));
        CHECK_OK(sb_tree_add(u, 0, 2, -1.0f, NULL));
        CHECK_OK(sb_tree_finalize(u, 1));
        CHECK_EQ(sb_tree_len(u), 2);
        sb_tree_free(u);
    }
}

/* The CPU build of the library has no GPU path: every sb_cuda_* call answers NO_DEVICE (or rejects NULL
 * handles first) and writes nothing. */
static void test_cuda_without_gpu(void) {
    sb_cuda_device *dev = (sb_cuda_device *)&dev;
    sb_cuda_sampler *sampler = (sb_cuda_sampler *)&sampler;
    sb_cuda_tree_shape shape = {1, 8, 4};
    sb_cuda_raw_trees raw;
    sb_cuda_trees trees;
    sb_cuda_acceptance acc;
    char name[16];
    int32_t major = -1, minor = -1;
    memset(&raw, 0, sizeof raw);
    memset(&trees, 0, sizeof trees);
    memset(&acc, 0, sizeof acc);
    CHECK_STATUS(sb_cuda_device_open(0, &dev), SB_STATUS_NO_DEVICE);
    CHECK(dev == (sb_cuda_device *)&dev);
    CHECK_STATUS(sb_cuda_device_open(0, NULL), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_cuda_device_open(-1, &dev), SB_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(sb_cuda_device_name(NULL, name, sizeof name, &major, &minor), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_cuda_tree_finalize(NULL, &shape, &raw, &trees, NULL), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_cuda_verify_greedy(NULL, &shape, &trees, NULL, 10, 0, NULL, NULL, &acc, NULL),
                 SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_cuda_sampler_new(NULL, 1, 8, 4, 10, &sampler), SB_STATUS_NULL_ARGUMENT);
    CHECK(sampler == (sb_cuda_sampler *)&sampler);
    CHECK_STATUS(sb_cuda_verify_sample(NULL, &trees, NULL, 0, NULL, &acc), SB_STATUS_NULL_ARGUMENT);
    sb_cuda_device_free(NULL);
    sb_cuda_sampler_free(NULL);
    CHECK(strcmp(sb_status_str(SB_STATUS_NO_DEVICE), "unknown status") != 0);
}

int main(void) {
    test_version_status_defaults();
    test_cuda_without_gpu();
    test_create_errors_and_null_handles();
    test_sglang_request_0();
    test_sglang_request_1();
    test_layouts();
    test_lone_root();
    test_dedup();
    test_budget();
    test_tree_errors();
    test_layout_errors();
    test_verify_errors();
    test_sampling_determinism_and_greedy_equivalence();
    test_sampling_distribution();
    test_full_depth_chain();
    test_reuse_random_trees();

    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
