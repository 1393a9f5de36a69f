/*
 * C tests of the drafter and session API (every sb_drafter_*, sb_session_* and sb_adapter_* export):
 * NULL handles and pointers, struct sizes, call order, out-of-range tokens and shapes, non-finite
 * inputs, trees too small for the draft, out-of-range session and adapter params, sb_drafter_load's
 * error message, feedback and policy changes that change nothing on error, statistics buffers, a
 * drafter freed before its sessions, an online adapter learning from one or two sessions (and freed
 * before them), and adapters attached across drafter kinds. After every error the session must still
 * be usable: each part ends with a full valid loop (prefill, then draft -> verify -> commit ->
 * feedback iterations whose output must equal the toy target's plain greedy output).
 *
 *   test_session DRAFTER_DIR [OTHER_KIND_DRAFTER_DIR]
 *       (tools/engine/tests/fixtures/drafter_tiny or eagle3_tiny; the other one, if given, for the
 *       cross-kind adapter checks)
 *
 * Built with -DSB_TEST_ADAPTER_FILES it also saves and loads adapters, in $SB_TEST_SCRATCH (the
 * test `adapter_files` of tests/c_api.rs).
 *
 * The target is the toy of examples/c/speculate.c (greedy next token and features are fixed
 * functions of a token); the embedding is a toy 300 x 64 array. Statuses and arm kinds that differ
 * between the drafter kinds branch on sb_drafter_info.kind. The program prints one line per failed
 * check (file:line) and ends with "N passed, M failed"; it exits non-zero on any failure.
 *
 * Built and run by tests/c_api.rs with gcc, clang ASan+UBSan and valgrind, once per fixture.
 */

#include "specblock.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* ---------------------------------------------------------------------------------------------------- */
/* Fixture, toy target and shared buffers                                                               */
/* ---------------------------------------------------------------------------------------------------- */

#define TOY_VOCAB 300u
#define TOY_HIDDEN 64u
#define EMBED_LEN ((uint64_t)TOY_VOCAB * TOY_HIDDEN)
/* Feature rows the buffers hold: the longest prompt here and SB_MAX_KEEP + 1 commit rows. */
#define MAX_ROWS 80u
#define MAX_PROMPT 40u

static const char *g_dir;
static float *g_embed;         /* the target's toy embedding, EMBED_LEN values */
static sb_drafter_info g_info; /* shape and kind of the fixture */
static int g_eagle3;           /* the fixture is an EAGLE-3 drafter */
static float *g_feats;         /* MAX_ROWS feature rows */
static int32_t *g_nodes;       /* tree tokens, SB_MAX_NODES + 1 */
static int32_t *g_argmax;      /* target argmax per tree row, SB_MAX_NODES + 1 */

/* Where a call must not write: handles start here and must still be here after a failure. */
static char g_sentinel;
#define SENTINEL(T) ((T *)(void *)&g_sentinel)

static int32_t toy_next(int32_t token) {
    return (int32_t)(((uint32_t)token * 37u + 11u) % TOY_VOCAB);
}

static void toy_features(int32_t token, float *out) {
    for (uint32_t i = 0; i < g_info.feature_width; i++) {
        out[i] = (float)(((uint32_t)token * 2654435761u + i * 40503u) % 1000u) / 500.0f - 1.0f;
    }
}

static float *feat_row(uint32_t row) { return g_feats + (size_t)row * g_info.feature_width; }

/* The arm kind of the fixture's drafter, and the other drafting kind. */
static uint32_t own_arm_kind(void) { return g_eagle3 ? SB_ARM_EAGLE3 : SB_ARM_SPECBLOCK; }
static uint32_t other_arm_kind(void) { return g_eagle3 ? SB_ARM_SPECBLOCK : SB_ARM_EAGLE3; }

/* A drafting arm of the fixture's kind (only the fields of its kind set, as get_stats returns them). */
static sb_arm own_arm(uint32_t budget) {
    sb_arm a;
    memset(&a, 0, sizeof a);
    a.kind = own_arm_kind();
    a.budget = budget;
    if (g_eagle3) {
        a.depth = 3;
        a.top_k = 2;
    } else {
        a.max_seeds = 2;
    }
    return a;
}

static sb_arm plain_arm(void) {
    sb_arm a;
    memset(&a, 0, sizeof a);
    a.kind = SB_ARM_PLAIN;
    return a;
}

static sb_drafter *load_drafter(void) {
    sb_drafter_params dp = sb_drafter_default_params();
    sb_drafter *d = NULL;
    char err[256] = {0};
    sb_status s = sb_drafter_load(g_dir, &dp, g_embed, EMBED_LEN, &d, err, sizeof err);
    CHECK_OK(s);
    if (s != SB_STATUS_OK) fprintf(stderr, "sb_drafter_load(%s): %s\n", g_dir, err);
    return d;
}

/* The default params with a small context (creation zeroes the whole context cache). */
static sb_session_params adaptive_params(void) {
    sb_session_params sp = sb_session_default_params();
    sp.max_entries = 256;
    return sp;
}

/* A fixed shape of 24 nodes (SpecBlock: at most 4 block-2 seeds; EAGLE-3: depth 7, top-k 10). */
static sb_session_params fixed_params(void) {
    sb_session_params sp = adaptive_params();
    sp.policy = SB_POLICY_FIXED;
    sp.budget = 24;
    sp.max_seeds = 4;
    return sp;
}

static sb_session *new_session(const sb_drafter *d, const sb_session_params *sp) {
    sb_session *s = NULL;
    CHECK_OK(sb_session_new(d, sp, &s));
    return s;
}

/* A tree for the session's drafts (sb_session_tree_params). */
static sb_tree *session_tree(const sb_session *s) {
    sb_tree_params tp;
    sb_tree *t = NULL;
    CHECK_OK(sb_session_tree_params(s, &tp));
    CHECK_OK(sb_tree_new(&tp, &t));
    return t;
}

static sb_tree *small_tree(uint32_t max_nodes, uint32_t max_depth) {
    sb_tree_params tp = sb_tree_default_params();
    sb_tree *t = NULL;
    tp.max_nodes = max_nodes;
    tp.max_depth = max_depth;
    CHECK_OK(sb_tree_new(&tp, &t));
    return t;
}

/* A prompt of `n` tokens (n <= MAX_PROMPT) and the target's first sampled token after it: fills
 * g_feats with the prompt's features and `tokens` with the n + 1 tokens. */
static void make_prompt(uint32_t n, int32_t *tokens) {
    for (uint32_t i = 0; i < n; i++) {
        tokens[i] = (int32_t)((i * 53u + 3u) % TOY_VOCAB);
        toy_features(tokens[i], feat_row(i));
    }
    tokens[n] = toy_next(tokens[n - 1]);
}

/* Prefills a prompt of `n` tokens; on success `*last` is the first sampled token (the next root). */
static sb_status prefill(sb_session *s, uint32_t n, int32_t *last) {
    int32_t tokens[MAX_PROMPT + 1];
    make_prompt(n, tokens);
    sb_status st = sb_session_prefill(s, g_feats, n, tokens, n + 1);
    if (st == SB_STATUS_OK) *last = tokens[n];
    return st;
}

/* One iteration: draft, the toy target's greedy verification, commit, feedback. Returns the first
 * failing status (and `*step` names the call); checks that the root is the last emitted token and
 * that the emitted tokens are the toy target's greedy continuation. `*emitted` counts tokens. */
static sb_status iterate(sb_session *s, sb_tree *tree, int32_t *last, uint32_t *emitted,
                         const char **step) {
    sb_status st;
    *step = "draft";
    if ((st = sb_session_draft(s, tree)) != SB_STATUS_OK) return st;
    uint32_t n = sb_tree_len(tree);
    *step = "tree tokens";
    if ((st = sb_tree_tokens(tree, g_nodes, n)) != SB_STATUS_OK) return st;
    CHECK(n >= 1 && g_nodes[0] == *last);
    for (uint32_t i = 0; i < n; i++) g_argmax[i] = toy_next(g_nodes[i]);
    sb_accept acc;
    *step = "verify";
    if ((st = sb_verify_greedy(tree, g_argmax, n, &acc)) != SB_STATUS_OK) return st;
    int greedy = 1;
    int32_t prev = *last;
    for (uint32_t i = 0; i < acc.n_accepted; i++) {
        greedy &= acc.tokens[i] == toy_next(prev);
        prev = acc.tokens[i];
    }
    greedy &= acc.bonus_token == toy_next(prev);
    CHECK(greedy);
    for (uint32_t j = 0; j < acc.n_keep; j++) toy_features(g_nodes[acc.keep[j]], feat_row(j));
    *step = "commit";
    st = sb_session_commit(s, acc.tokens, acc.n_accepted, acc.bonus_token, g_feats, acc.n_keep);
    if (st != SB_STATUS_OK) return st;
    *last = acc.bonus_token;
    *emitted += acc.n_accepted + 1;
    sb_feedback fb = {(uint32_t)sizeof(sb_feedback), n, acc.n_accepted + 1, 0, 1e-3 + 2e-4 * n, 0.0};
    *step = "feedback";
    return sb_session_feedback(s, &fb);
}

/* `iters` valid iterations: every call must succeed. */
static void run_loop_at(sb_session *s, sb_tree *tree, int32_t *last, int iters, int line) {
    uint32_t emitted = 0;
    for (int i = 0; i < iters; i++) {
        const char *step = "";
        sb_status st = iterate(s, tree, last, &emitted, &step);
        CHECK_STATUS_AT(st, SB_STATUS_OK, line);
        if (st != SB_STATUS_OK) {
            fprintf(stderr, "%s:%d: iteration %d failed at %s\n", __FILE__, line, i, step);
            return;
        }
    }
    CHECK_AT(emitted >= (uint32_t)iters, line);
}

#define RUN_LOOP(s, tree, last, iters) run_loop_at((s), (tree), (last), (iters), __LINE__)

/* Prefill then `iters` valid iterations. */
static void full_loop_at(sb_session *s, sb_tree *tree, int iters, int line) {
    int32_t last = -1;
    CHECK_STATUS_AT(prefill(s, 5, &last), SB_STATUS_OK, line);
    run_loop_at(s, tree, &last, iters, line);
}

#define FULL_LOOP(s, tree, iters) full_loop_at((s), (tree), (iters), __LINE__)

static int stats_equal(const sb_session_stats *a, const sb_session_stats *b) {
    return a->iterations == b->iterations && a->mean_accept_length == b->mean_accept_length &&
           a->current_arm == b->current_arm && a->n_arms == b->n_arms;
}

static int arm_equal(const sb_arm *a, const sb_arm *b) {
    return a->kind == b->kind && a->budget == b->budget && a->max_seeds == b->max_seeds &&
           a->depth == b->depth && a->top_k == b->top_k && a->min_confidence == b->min_confidence;
}

static int arm_stats_equal(const sb_arm_stats *a, const sb_arm_stats *b) {
    return arm_equal(&a->arm, &b->arm) && a->pulls == b->pulls && a->tokens == b->tokens &&
           a->seconds == b->seconds && a->tokens_per_second == b->tokens_per_second;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Defaults                                                                                             */
/* ---------------------------------------------------------------------------------------------------- */

static void test_defaults(void) {
    sb_drafter_params dp = sb_drafter_default_params();
    CHECK_EQ(dp.struct_size, sizeof(sb_drafter_params));
    CHECK_EQ(dp.threads, 1);

    sb_session_params sp = sb_session_default_params();
    CHECK_EQ(sp.struct_size, sizeof(sb_session_params));
    CHECK(sizeof(sb_session_params) > 24); /* the first published layout is a prefix */
    CHECK_EQ(sp.max_entries, 4096);
    CHECK_EQ(sp.budget, 90);
    CHECK_EQ(sp.beam_width, 10);
    CHECK_EQ(sp.eagle_depth, 7);
    CHECK_EQ(sp.eagle_top_k, 10);
    CHECK_EQ(sp.policy, SB_POLICY_ADAPTIVE);
    CHECK_EQ(sp.max_seeds, UINT32_MAX);
    CHECK(sp.min_confidence == 0.0f);
    CHECK(sp.discount > 0.0f && sp.discount <= 1.0f);
    CHECK(sp.exploration >= 0.0f && isfinite(sp.exploration));
    CHECK(sp.arms == NULL);
    CHECK_EQ(sp.n_arms, 0);
}

/* ---------------------------------------------------------------------------------------------------- */
/* sb_drafter_load, sb_drafter_get_info, sb_drafter_free                                                */
/* ---------------------------------------------------------------------------------------------------- */

/* A load that must fail with `want`: with error_cap 256, 8, 2 and 1 the buffer must hold a
 * NUL-terminated message (non-empty unless cap is 1, truncated to cap - 1 bytes, nothing written past
 * cap), with cap 0 nothing may be written, and a NULL buffer is allowed. `*out_drafter` is never
 * written. `needle`, if not NULL, must appear in the full message. */
static void load_fails_at(const char *dir, const sb_drafter_params *p, const float *emb,
                          uint64_t emb_len, int null_out, sb_status want, const char *needle,
                          int line) {
    static const size_t caps[5] = {256, 8, 2, 1, 0};
    for (size_t c = 0; c < 5; c++) {
        char buf[300];
        size_t cap = caps[c];
        memset(buf, 'X', sizeof buf);
        sb_drafter *d = SENTINEL(sb_drafter);
        sb_status s = sb_drafter_load(dir, p, emb, emb_len, null_out ? NULL : &d, buf, cap);
        CHECK_STATUS_AT(s, want, line);
        CHECK_AT(d == SENTINEL(sb_drafter), line);
        if (s == SB_STATUS_OK && d != SENTINEL(sb_drafter)) sb_drafter_free(d);
        size_t untouched_from = cap;
        if (cap > 0) {
            const char *nul = memchr(buf, 0, cap);
            CHECK_AT(nul != NULL, line);
            size_t len = nul ? (size_t)(nul - buf) : cap;
            if (cap == 1) {
                CHECK_AT(len == 0, line);
            } else if (cap < 16) {
                CHECK_AT(len == cap - 1, line); /* every message is longer: truncated to fill */
            } else {
                CHECK_AT(len >= 1, line);
                if (needle) {
                    CHECK_AT(nul != NULL && strstr(buf, needle) != NULL, line);
                    if (nul == NULL || strstr(buf, needle) == NULL) {
                        fprintf(stderr, "%s:%d: message \"%.*s\" lacks \"%s\"\n", __FILE__, line,
                                (int)len, buf, needle);
                    }
                }
            }
        }
        int clean = 1;
        for (size_t i = untouched_from; i < sizeof buf; i++) clean &= buf[i] == 'X';
        CHECK_AT(clean, line); /* nothing past error_cap */
    }
    /* No buffer at all, with or without a capacity. */
    sb_drafter *d = SENTINEL(sb_drafter);
    CHECK_STATUS_AT(sb_drafter_load(dir, p, emb, emb_len, null_out ? NULL : &d, NULL, 256), want, line);
    CHECK_STATUS_AT(sb_drafter_load(dir, p, emb, emb_len, null_out ? NULL : &d, NULL, 0), want, line);
    CHECK_AT(d == SENTINEL(sb_drafter), line);
}

#define LOAD_FAILS(dir, p, emb, len, want, needle) \
    load_fails_at((dir), (p), (emb), (len), 0, (want), (needle), __LINE__)

static void test_load_errors(void) {
    sb_drafter_params dp = sb_drafter_default_params();

    /* NULL pointers. */
    LOAD_FAILS(NULL, &dp, g_embed, EMBED_LEN, SB_STATUS_NULL_ARGUMENT, "NULL");
    load_fails_at(g_dir, &dp, g_embed, EMBED_LEN, 1, SB_STATUS_NULL_ARGUMENT, "NULL", __LINE__);
    LOAD_FAILS(g_dir, NULL, g_embed, EMBED_LEN, SB_STATUS_NULL_ARGUMENT, "params");
    LOAD_FAILS(g_dir, &dp, NULL, EMBED_LEN, SB_STATUS_NULL_ARGUMENT, "embedding");
    LOAD_FAILS(g_dir, &dp, NULL, 1, SB_STATUS_NULL_ARGUMENT, "embedding");

    /* struct_size. */
    static const uint32_t bad_sizes[6] = {0, 4, 7, 9, 16, UINT32_MAX};
    for (int i = 0; i < 6; i++) {
        sb_drafter_params p = dp;
        p.struct_size = bad_sizes[i];
        LOAD_FAILS(g_dir, &p, g_embed, EMBED_LEN, SB_STATUS_STRUCT_SIZE, "struct_size");
    }

    /* Threads: 1..=256. */
    static const uint32_t bad_threads[4] = {0, 257, 100000, UINT32_MAX};
    for (int i = 0; i < 4; i++) {
        sb_drafter_params p = dp;
        p.threads = bad_threads[i];
        LOAD_FAILS(g_dir, &p, g_embed, EMBED_LEN, SB_STATUS_INVALID_ARGUMENT, "threads");
    }

    /* Directories that hold no drafter. */
    LOAD_FAILS("/nonexistent/specblock/drafter", &dp, g_embed, EMBED_LEN, SB_STATUS_INVALID_ARGUMENT,
               "config.json");
    LOAD_FAILS("", &dp, g_embed, EMBED_LEN, SB_STATUS_INVALID_ARGUMENT, NULL);
    char file_dir[1024];
    snprintf(file_dir, sizeof file_dir, "%s/config.json", g_dir);
    LOAD_FAILS(file_dir, &dp, g_embed, EMBED_LEN, SB_STATUS_INVALID_ARGUMENT, NULL);
    LOAD_FAILS("/tmp/\xff\xfe-not-utf8", &dp, g_embed, EMBED_LEN, SB_STATUS_INVALID_ARGUMENT, "UTF-8");

    /* Embeddings of the wrong length (neither fixture has its own embedding, so (NULL, 0) is one). */
    LOAD_FAILS(g_dir, &dp, g_embed, EMBED_LEN - 1, SB_STATUS_SHAPE_MISMATCH, "embedding");
    LOAD_FAILS(g_dir, &dp, g_embed, TOY_HIDDEN, SB_STATUS_SHAPE_MISMATCH, "embedding");
    LOAD_FAILS(g_dir, &dp, g_embed, 1, SB_STATUS_SHAPE_MISMATCH, "embedding");
    LOAD_FAILS(g_dir, &dp, NULL, 0, SB_STATUS_SHAPE_MISMATCH, "embedding");
    /* A length whose byte size overflows is refused before the buffer is touched. */
    LOAD_FAILS(g_dir, &dp, g_embed, UINT64_MAX, SB_STATUS_INVALID_ARGUMENT, "embedding");
    LOAD_FAILS(g_dir, &dp, g_embed, (uint64_t)1 << 62, SB_STATUS_INVALID_ARGUMENT, "embedding");

    /* The boundary values load. */
    sb_drafter_params p = dp;
    p.threads = 2;
    sb_drafter *d = NULL;
    char err[256];
    CHECK_OK(sb_drafter_load(g_dir, &p, g_embed, EMBED_LEN, &d, err, sizeof err));
    CHECK(d != NULL);
    sb_drafter_free(d);
    d = NULL;
    CHECK_OK(sb_drafter_load(g_dir, &dp, g_embed, EMBED_LEN, &d, NULL, 0));
    CHECK(d != NULL);
    sb_drafter_free(d);

    sb_drafter_free(NULL); /* a no-op */
}

static void test_info(void) {
    sb_drafter *d = load_drafter();
    sb_drafter_info info, untouched;
    memset(&info, 0xAB, sizeof info);
    memcpy(&untouched, &info, sizeof info);
    CHECK_STATUS(sb_drafter_get_info(NULL, &info), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_drafter_get_info(d, NULL), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_drafter_get_info(NULL, NULL), SB_STATUS_NULL_ARGUMENT);
    CHECK(memcmp(&info, &untouched, sizeof info) == 0);
    CHECK_OK(sb_drafter_get_info(d, &info));
    CHECK_EQ(info.kind, g_info.kind);
    CHECK_EQ(info.hidden, TOY_HIDDEN);
    CHECK_EQ(info.vocab, TOY_VOCAB);
    CHECK_EQ(info.feature_width, 144);
    CHECK_EQ(info.draft_vocab, 120);
    CHECK_EQ(info.slots, g_eagle3 ? 1 : 4);

    /* The fixtures name no aux_layer_ids: the default layers [1, L/2 - 1, L - 4] of the target. */
    uint32_t layers[SB_AUX_LAYERS + 1] = {7, 7, 7, 7};
    CHECK_STATUS(sb_drafter_get_aux_layers(NULL, 30, layers, SB_AUX_LAYERS), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_drafter_get_aux_layers(d, 30, NULL, SB_AUX_LAYERS), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_drafter_get_aux_layers(d, 30, layers, SB_AUX_LAYERS - 1), SB_STATUS_BUFFER_TOO_SMALL);
    CHECK_STATUS(sb_drafter_get_aux_layers(d, 3, layers, SB_AUX_LAYERS), SB_STATUS_INVALID_ARGUMENT);
    CHECK(layers[0] == 7 && layers[1] == 7 && layers[2] == 7);
    CHECK_OK(sb_drafter_get_aux_layers(d, 30, layers, SB_AUX_LAYERS + 1));
    CHECK_EQ(layers[0], 1);
    CHECK_EQ(layers[1], 14);
    CHECK_EQ(layers[2], 26);
    CHECK_EQ(layers[3], 7);
    CHECK_OK(sb_drafter_get_aux_layers(d, 4, layers, SB_AUX_LAYERS));
    CHECK(layers[0] == 1 && layers[1] == 1 && layers[2] == 0);
    sb_drafter_free(d);
}

/* ---------------------------------------------------------------------------------------------------- */
/* sb_session_new, sb_session_free, sb_session_tree_params                                              */
/* ---------------------------------------------------------------------------------------------------- */

/* sb_session_new must return `want`; on failure it must not write the handle, on success the session
 * is freed again. */
static void new_expect_at(const sb_drafter *d, const sb_session_params *sp, sb_status want, int line) {
    sb_session *s = SENTINEL(sb_session);
    CHECK_STATUS_AT(sb_session_new(d, sp, &s), want, line);
    if (want == SB_STATUS_OK) {
        CHECK_AT(s != NULL && s != SENTINEL(sb_session), line);
    } else {
        CHECK_AT(s == SENTINEL(sb_session), line);
    }
    if (s != SENTINEL(sb_session)) sb_session_free(s);
}

#define NEW_EXPECT(d, sp, want) new_expect_at((d), (sp), (want), __LINE__)

/* The params of adaptive_params() / fixed_params() with one field changed, expecting `want`. */
#define NEW_WITH(d, field, value, want)             \
    do {                                            \
        sb_session_params p_ = adaptive_params();   \
        p_.field = (value);                         \
        NEW_EXPECT((d), &p_, (want));               \
    } while (0)

#define FIXED_WITH(d, field, value, want)           \
    do {                                            \
        sb_session_params p_ = fixed_params();      \
        p_.field = (value);                         \
        NEW_EXPECT((d), &p_, (want));               \
    } while (0)

static void test_session_new_errors(void) {
    sb_drafter *d = load_drafter();
    sb_session_params sp = adaptive_params();
    const sb_status eagle_only = g_eagle3 ? SB_STATUS_INVALID_ARGUMENT : SB_STATUS_OK;

    /* NULL pointers. */
    NEW_EXPECT(NULL, &sp, SB_STATUS_NULL_ARGUMENT);
    NEW_EXPECT(d, NULL, SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_session_new(d, &sp, NULL), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_session_new(NULL, NULL, NULL), SB_STATUS_NULL_ARGUMENT);
    sb_session_free(NULL); /* a no-op */

    sb_session_params defaults = sb_session_default_params();
    NEW_EXPECT(d, &defaults, SB_STATUS_OK);

    /* struct_size: the first published layout (24 bytes) or this header's size, nothing between (a
     * size between two layouts would cut a field). */
    static const uint32_t bad_sizes[11] = {
        0, 4, 20, 23, 25, 28, (uint32_t)sizeof(sb_session_params) - 8,
        (uint32_t)sizeof(sb_session_params) + 1, (uint32_t)sizeof(sb_session_params) + 8,
        (uint32_t)sizeof(sb_session_params) * 2, UINT32_MAX,
    };
    for (int i = 0; i < 11; i++) {
        sb_session_params p = sp;
        p.struct_size = bad_sizes[i];
        NEW_EXPECT(d, &p, SB_STATUS_STRUCT_SIZE);
    }
    {
        /* A caller built against the first layout gets one fixed shape at its budget. */
        struct {
            uint32_t struct_size, max_entries, budget, beam_width, eagle_depth, eagle_top_k;
        } first = {24, 256, 24, 10, 7, 10};
        sb_session *s = NULL;
        CHECK_OK(sb_session_new(d, (const sb_session_params *)(const void *)&first, &s));
        sb_session_stats st;
        sb_arm_stats arm;
        CHECK_OK(sb_session_get_stats(s, &st, &arm, 1));
        CHECK_EQ(st.n_arms, 1);
        CHECK_EQ(arm.arm.kind, own_arm_kind());
        CHECK_EQ(arm.arm.budget, 24);
        sb_tree *t = session_tree(s);
        FULL_LOOP(s, t, 3);
        sb_tree_free(t);
        sb_session_free(s);
        /* The first layout has the alignment of uint32_t only: a struct at an address that is not
         * aligned for this header's sb_session_params (whose arms pointer needs 8 bytes) is read too. */
        _Alignas(8) uint32_t words[8];
        for (int off = 0; off < 2; off++) {
            memcpy(words + off, &first, sizeof first);
            s = SENTINEL(sb_session);
            CHECK_OK(sb_session_new(d, (const sb_session_params *)(const void *)(words + off), &s));
            CHECK(s != NULL && s != SENTINEL(sb_session));
            if (s != SENTINEL(sb_session)) sb_session_free(s);
        }
        /* The first layout is read as such: its budget is range-checked too. */
        first.budget = 0;
        NEW_EXPECT(d, (const sb_session_params *)(const void *)&first, SB_STATUS_INVALID_ARGUMENT);
        first.budget = 24;
        first.max_entries = 0;
        NEW_EXPECT(d, (const sb_session_params *)(const void *)&first, SB_STATUS_INVALID_ARGUMENT);
    }

    /* Entries. */
    NEW_WITH(d, max_entries, 0, SB_STATUS_INVALID_ARGUMENT);
    NEW_WITH(d, max_entries, (1u << 24) + 1, SB_STATUS_INVALID_ARGUMENT);
    NEW_WITH(d, max_entries, UINT32_MAX, SB_STATUS_INVALID_ARGUMENT);
    NEW_WITH(d, max_entries, 1, SB_STATUS_OK);

    /* Policy. */
    NEW_WITH(d, policy, 2, SB_STATUS_INVALID_ARGUMENT);
    NEW_WITH(d, policy, 7, SB_STATUS_INVALID_ARGUMENT);
    NEW_WITH(d, policy, UINT32_MAX, SB_STATUS_INVALID_ARGUMENT);

    /* Budget: 1..=SB_MAX_NODES (checked under either policy). */
    NEW_WITH(d, budget, SB_MAX_NODES + 1, SB_STATUS_INVALID_ARGUMENT);
    NEW_WITH(d, budget, UINT32_MAX, SB_STATUS_INVALID_ARGUMENT);
    FIXED_WITH(d, budget, 0, SB_STATUS_INVALID_ARGUMENT);
    FIXED_WITH(d, budget, SB_MAX_NODES + 1, SB_STATUS_INVALID_ARGUMENT);
    FIXED_WITH(d, budget, UINT32_MAX, SB_STATUS_INVALID_ARGUMENT);
    FIXED_WITH(d, budget, 1, SB_STATUS_OK);

    /* Beam width (SpecBlock's: 1..=draft vocab; an EAGLE-3 session does not use it). */
    NEW_WITH(d, beam_width, 0, g_eagle3 ? SB_STATUS_OK : SB_STATUS_INVALID_ARGUMENT);
    NEW_WITH(d, beam_width, 121, g_eagle3 ? SB_STATUS_OK : SB_STATUS_INVALID_ARGUMENT);
    NEW_WITH(d, beam_width, UINT32_MAX, g_eagle3 ? SB_STATUS_OK : SB_STATUS_INVALID_ARGUMENT);
    NEW_WITH(d, beam_width, 120, SB_STATUS_OK);

    /* EAGLE-3 fixed shape: depth 1..=63, top-k 1..=draft vocab (a SpecBlock session does not use them). */
    FIXED_WITH(d, eagle_depth, 0, eagle_only);
    FIXED_WITH(d, eagle_depth, SB_MAX_DEPTH, eagle_only);
    FIXED_WITH(d, eagle_depth, UINT32_MAX, eagle_only);
    FIXED_WITH(d, eagle_top_k, 0, eagle_only);
    FIXED_WITH(d, eagle_top_k, 121, eagle_only);
    FIXED_WITH(d, eagle_top_k, UINT32_MAX, eagle_only);
    FIXED_WITH(d, eagle_depth, SB_MAX_DEPTH - 1, SB_STATUS_OK);
    FIXED_WITH(d, max_seeds, 0, SB_STATUS_OK);

    /* Confidence stop: [0, 1]. */
    FIXED_WITH(d, min_confidence, -0.5f, SB_STATUS_INVALID_ARGUMENT);
    FIXED_WITH(d, min_confidence, 1.5f, SB_STATUS_INVALID_ARGUMENT);
    FIXED_WITH(d, min_confidence, NAN, SB_STATUS_INVALID_ARGUMENT);
    FIXED_WITH(d, min_confidence, INFINITY, SB_STATUS_INVALID_ARGUMENT);
    FIXED_WITH(d, min_confidence, 1.0f, SB_STATUS_OK);

    /* Discount: (0, 1]; exploration: finite, >= 0 (both policies validate them). */
    NEW_WITH(d, discount, 0.0f, SB_STATUS_INVALID_ARGUMENT);
    NEW_WITH(d, discount, -0.5f, SB_STATUS_INVALID_ARGUMENT);
    NEW_WITH(d, discount, 1.5f, SB_STATUS_INVALID_ARGUMENT);
    NEW_WITH(d, discount, NAN, SB_STATUS_INVALID_ARGUMENT);
    NEW_WITH(d, discount, INFINITY, SB_STATUS_INVALID_ARGUMENT);
    FIXED_WITH(d, discount, 0.0f, SB_STATUS_INVALID_ARGUMENT);
    NEW_WITH(d, discount, 1.0f, SB_STATUS_OK);
    NEW_WITH(d, exploration, -1.0f, SB_STATUS_INVALID_ARGUMENT);
    NEW_WITH(d, exploration, NAN, SB_STATUS_INVALID_ARGUMENT);
    NEW_WITH(d, exploration, INFINITY, SB_STATUS_INVALID_ARGUMENT);
    FIXED_WITH(d, exploration, -1.0f, SB_STATUS_INVALID_ARGUMENT);
    NEW_WITH(d, exploration, 0.0f, SB_STATUS_OK);

    /* Arms. */
    sb_arm arms[33];
    for (uint32_t i = 0; i < 33; i++) arms[i] = own_arm(i + 1);
    sb_session_params p = sp;
    p.arms = arms;
    p.n_arms = 0;
    NEW_EXPECT(d, &p, SB_STATUS_INVALID_ARGUMENT); /* non-NULL arms, none counted */
    p.n_arms = 33;
    NEW_EXPECT(d, &p, SB_STATUS_INVALID_ARGUMENT);
    p.n_arms = UINT32_MAX; /* refused by its count before any arm is read */
    NEW_EXPECT(d, &p, SB_STATUS_INVALID_ARGUMENT);
    p.n_arms = 32;
    NEW_EXPECT(d, &p, SB_STATUS_OK);
    p.n_arms = 1;
    NEW_EXPECT(d, &p, SB_STATUS_OK);
    p.arms = NULL;
    p.n_arms = 5; /* ignored without arms: the default ladder */
    NEW_EXPECT(d, &p, SB_STATUS_OK);
    p.n_arms = 40;
    NEW_EXPECT(d, &p, SB_STATUS_OK);
    {
        /* A fixed policy ignores the arms (they are the adaptive policy's). */
        sb_arm bogus = own_arm(1);
        bogus.kind = 99;
        sb_session_params f = fixed_params();
        f.arms = &bogus;
        f.n_arms = 1;
        NEW_EXPECT(d, &f, SB_STATUS_OK);
    }

    /* One bad arm among good ones. */
    sb_arm two[2];
    p = sp;
    p.arms = two;
    p.n_arms = 2;
#define ARM_EXPECT(edit, want)                      \
    do {                                            \
        two[0] = plain_arm();                       \
        two[1] = own_arm(8);                        \
        edit;                                       \
        NEW_EXPECT(d, &p, (want));                  \
    } while (0)
    ARM_EXPECT((void)0, SB_STATUS_OK);
    ARM_EXPECT(two[1].kind = 3, SB_STATUS_INVALID_ARGUMENT);
    ARM_EXPECT(two[1].kind = UINT32_MAX, SB_STATUS_INVALID_ARGUMENT);
    ARM_EXPECT(two[0].kind = 3, SB_STATUS_INVALID_ARGUMENT);
    ARM_EXPECT(two[1].kind = other_arm_kind(), SB_STATUS_INVALID_ARGUMENT);
    ARM_EXPECT((two[1].kind = other_arm_kind(), two[1].depth = 2, two[1].top_k = 2),
               SB_STATUS_INVALID_ARGUMENT);
    ARM_EXPECT(two[1].budget = 0, SB_STATUS_INVALID_ARGUMENT);
    ARM_EXPECT(two[1].budget = SB_MAX_NODES + 1, SB_STATUS_INVALID_ARGUMENT);
    ARM_EXPECT(two[1].budget = UINT32_MAX, SB_STATUS_INVALID_ARGUMENT);
    ARM_EXPECT(two[1].budget = SB_MAX_NODES, SB_STATUS_OK);
    ARM_EXPECT(two[1].min_confidence = -0.1f, SB_STATUS_INVALID_ARGUMENT);
    ARM_EXPECT(two[1].min_confidence = 1.1f, SB_STATUS_INVALID_ARGUMENT);
    ARM_EXPECT(two[1].min_confidence = NAN, SB_STATUS_INVALID_ARGUMENT);
    ARM_EXPECT(two[0].min_confidence = NAN, SB_STATUS_INVALID_ARGUMENT);
    ARM_EXPECT(two[1].min_confidence = 1.0f, SB_STATUS_OK);
    ARM_EXPECT(two[1].max_seeds = UINT32_MAX, SB_STATUS_OK);
    if (g_eagle3) {
        ARM_EXPECT(two[1].depth = 0, SB_STATUS_INVALID_ARGUMENT);
        ARM_EXPECT(two[1].top_k = 0, SB_STATUS_INVALID_ARGUMENT);
        ARM_EXPECT(two[1].depth = SB_MAX_DEPTH, SB_STATUS_INVALID_ARGUMENT);
        ARM_EXPECT(two[1].depth = UINT32_MAX, SB_STATUS_INVALID_ARGUMENT);
        ARM_EXPECT(two[1].top_k = 121, SB_STATUS_INVALID_ARGUMENT);
        ARM_EXPECT(two[1].top_k = UINT32_MAX, SB_STATUS_INVALID_ARGUMENT);
        ARM_EXPECT((two[1].depth = SB_MAX_DEPTH - 1, two[1].top_k = 120), SB_STATUS_OK);
    } else {
        /* Depth and top-k are the EAGLE-3 arm's fields. */
        ARM_EXPECT((two[1].depth = UINT32_MAX, two[1].top_k = UINT32_MAX), SB_STATUS_OK);
    }
#undef ARM_EXPECT

    sb_drafter_free(d);
}

static void test_tree_params(void) {
    sb_drafter *d = load_drafter();
    sb_session_params sp = adaptive_params();
    sb_session *s = new_session(d, &sp);
    sb_tree_params tp, untouched;
    memset(&tp, 0xCD, sizeof tp);
    memcpy(&untouched, &tp, sizeof tp);
    CHECK_STATUS(sb_session_tree_params(NULL, &tp), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_session_tree_params(s, NULL), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_session_tree_params(NULL, NULL), SB_STATUS_NULL_ARGUMENT);
    CHECK(memcmp(&tp, &untouched, sizeof tp) == 0);
    CHECK_OK(sb_session_tree_params(s, &tp));
    CHECK_EQ(tp.struct_size, sizeof(sb_tree_params));
    CHECK(tp.max_nodes >= 90 && tp.max_nodes <= SB_MAX_NODES);
    CHECK(tp.max_depth >= 2 && tp.max_depth <= SB_MAX_DEPTH);
    sb_tree *t = NULL;
    CHECK_OK(sb_tree_new(&tp, &t));
    sb_tree_free(t);
    sb_session_free(s);

    /* Large shapes give a tree that holds them, within the library's limits. */
    sb_arm big = own_arm(SB_MAX_NODES);
    if (g_eagle3) {
        big.depth = SB_MAX_DEPTH - 1;
        big.top_k = 120;
    }
    sp.arms = &big;
    sp.n_arms = 1;
    s = new_session(d, &sp);
    CHECK_OK(sb_session_tree_params(s, &tp));
    CHECK_EQ(tp.max_nodes, SB_MAX_NODES);
    CHECK_EQ(tp.max_depth, g_eagle3 ? SB_MAX_DEPTH : 8);
    sb_session_free(s);
    sb_drafter_free(d);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Call order                                                                                           */
/* ---------------------------------------------------------------------------------------------------- */

static void test_call_order(void) {
    sb_drafter *d = load_drafter();
    for (int pass = 0; pass < 2; pass++) {
        sb_session_params sp = pass == 0 ? fixed_params() : adaptive_params();
        sb_session *s = new_session(d, &sp);
        sb_tree *t = session_tree(s);
        int32_t acc[1] = {1};
        toy_features(5, feat_row(0));
        toy_features(6, feat_row(1));

        /* Nothing before the prefill. */
        CHECK_STATUS(sb_session_draft(s, t), SB_STATUS_INVALID_STATE);
        CHECK_STATUS(sb_session_draft(s, t), SB_STATUS_INVALID_STATE);
        CHECK_STATUS(sb_session_commit(s, NULL, 0, 5, g_feats, 1), SB_STATUS_INVALID_STATE);
        CHECK_STATUS(sb_session_commit(s, acc, 1, 5, g_feats, 2), SB_STATUS_INVALID_STATE);

        int32_t last = -1;
        CHECK_OK(prefill(s, 5, &last));
        /* No commit before a draft. */
        CHECK_STATUS(sb_session_commit(s, NULL, 0, 5, g_feats, 1), SB_STATUS_INVALID_STATE);
        CHECK_STATUS(sb_session_commit(s, acc, 1, 5, g_feats, 2), SB_STATUS_INVALID_STATE);
        CHECK_OK(sb_session_draft(s, t));
        uint32_t n = sb_tree_len(t);
        CHECK(n >= 1);
        if (pass == 0) CHECK(n > 1); /* a fixed shape drafts */
        CHECK_OK(sb_tree_tokens(t, g_nodes, n));
        CHECK_EQ(g_nodes[0], last);
        /* Commit the root alone (nothing accepted), then no second commit for the same draft. */
        int32_t bonus = toy_next(last);
        toy_features(last, feat_row(0));
        CHECK_OK(sb_session_commit(s, NULL, 0, bonus, g_feats, 1));
        CHECK_STATUS(sb_session_commit(s, NULL, 0, bonus, g_feats, 1), SB_STATUS_INVALID_STATE);
        CHECK_STATUS(sb_session_commit(s, acc, 1, bonus, g_feats, 2), SB_STATUS_INVALID_STATE);
        sb_feedback fb = {(uint32_t)sizeof(sb_feedback), n, 1, 0, 1e-3, 0.0};
        CHECK_OK(sb_session_feedback(s, &fb));
        last = bonus;
        RUN_LOOP(s, t, &last, 6);

        /* A new prefill starts a new sequence: the old draft cannot be committed. */
        CHECK_OK(sb_session_draft(s, t));
        CHECK_OK(prefill(s, 7, &last));
        CHECK_STATUS(sb_session_commit(s, NULL, 0, 5, g_feats, 1), SB_STATUS_INVALID_STATE);
        RUN_LOOP(s, t, &last, 6);
        sb_tree_free(t);
        sb_session_free(s);
    }
    sb_drafter_free(d);
}

/* ---------------------------------------------------------------------------------------------------- */
/* sb_session_prefill                                                                                   */
/* ---------------------------------------------------------------------------------------------------- */

static void test_prefill_errors(void) {
    sb_drafter *d = load_drafter();
    sb_session_params sp = fixed_params();
    sb_session *s = new_session(d, &sp);
    sb_tree *t = session_tree(s);
    int32_t tok[MAX_PROMPT + 1];
    make_prompt(5, tok);

    CHECK_STATUS(sb_session_prefill(NULL, g_feats, 5, tok, 6), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_session_prefill(s, NULL, 5, tok, 6), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_session_prefill(s, g_feats, 5, NULL, 6), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_session_prefill(s, NULL, 5, NULL, 6), SB_STATUS_NULL_ARGUMENT);

    /* Row and token counts: n_feature_rows == n_tokens - 1, at least one prompt token. */
    CHECK_STATUS(sb_session_prefill(s, g_feats, 0, tok, 0), SB_STATUS_SHAPE_MISMATCH);
    CHECK_STATUS(sb_session_prefill(s, NULL, 0, NULL, 0), SB_STATUS_SHAPE_MISMATCH);
    CHECK_STATUS(sb_session_prefill(s, NULL, 0, tok, 1), SB_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(sb_session_prefill(s, g_feats, 4, tok, 6), SB_STATUS_SHAPE_MISMATCH);
    CHECK_STATUS(sb_session_prefill(s, g_feats, 6, tok, 6), SB_STATUS_SHAPE_MISMATCH);
    CHECK_STATUS(sb_session_prefill(s, g_feats, 5, tok, 5), SB_STATUS_SHAPE_MISMATCH);
    CHECK_STATUS(sb_session_prefill(s, g_feats, 1, tok, 6), SB_STATUS_SHAPE_MISMATCH);
    /* A row count whose + 1 overflows: refused by the shape check, nothing is read. */
    CHECK_STATUS(sb_session_prefill(s, g_feats, UINT32_MAX, tok, 0), SB_STATUS_SHAPE_MISMATCH);

    /* Tokens outside the vocabulary, in the prompt or as the sampled token. */
    static const int32_t bad_tokens[4] = {-1, (int32_t)TOY_VOCAB, INT32_MIN, INT32_MAX};
    for (int i = 0; i < 4; i++) {
        int32_t b[MAX_PROMPT + 1];
        make_prompt(5, b);
        b[2] = bad_tokens[i];
        CHECK_STATUS(sb_session_prefill(s, g_feats, 5, b, 6), SB_STATUS_TOKEN_OUT_OF_RANGE);
        make_prompt(5, b);
        b[5] = bad_tokens[i];
        CHECK_STATUS(sb_session_prefill(s, g_feats, 5, b, 6), SB_STATUS_TOKEN_OUT_OF_RANGE);
        b[0] = bad_tokens[i];
        CHECK_STATUS(sb_session_prefill(s, g_feats, 5, b, 6), SB_STATUS_TOKEN_OUT_OF_RANGE);
    }
    CHECK_STATUS(sb_session_draft(s, t), SB_STATUS_INVALID_STATE); /* none of them prefilled */

    /* Non-finite features. */
    static const float bad_values[3] = {NAN, INFINITY, -INFINITY};
    for (int i = 0; i < 3; i++) {
        make_prompt(5, tok);
        feat_row(3)[7] = bad_values[i];
        CHECK_STATUS(sb_session_prefill(s, g_feats, 5, tok, 6), SB_STATUS_NON_FINITE);
        make_prompt(5, tok);
        feat_row(0)[0] = bad_values[i];
        CHECK_STATUS(sb_session_prefill(s, g_feats, 5, tok, 6), SB_STATUS_NON_FINITE);
        make_prompt(5, tok);
        feat_row(4)[g_info.feature_width - 1] = bad_values[i];
        CHECK_STATUS(sb_session_prefill(s, g_feats, 5, tok, 6), SB_STATUS_NON_FINITE);
    }
    CHECK_STATUS(sb_session_draft(s, t), SB_STATUS_INVALID_STATE);

    /* A prefill that fails in the drafter (not in the argument checks) ends the old sequence too:
     * prefill starts a new sequence. */
    int32_t last = -1;
    CHECK_OK(prefill(s, 5, &last));
    RUN_LOOP(s, t, &last, 2);
    make_prompt(5, tok);
    feat_row(1)[1] = NAN;
    CHECK_STATUS(sb_session_prefill(s, g_feats, 5, tok, 6), SB_STATUS_NON_FINITE);
    CHECK_STATUS(sb_session_draft(s, t), SB_STATUS_INVALID_STATE);
    /* A prefill refused by the argument checks leaves the sequence as it was. */
    CHECK_OK(prefill(s, 5, &last));
    RUN_LOOP(s, t, &last, 2);
    CHECK_STATUS(sb_session_prefill(s, g_feats, 4, tok, 6), SB_STATUS_SHAPE_MISMATCH);
    tok[0] = -1;
    CHECK_STATUS(sb_session_prefill(s, g_feats, 5, tok, 6), SB_STATUS_TOKEN_OUT_OF_RANGE);
    RUN_LOOP(s, t, &last, 2);

    /* A prompt longer than the context. */
    sb_session_params small = fixed_params();
    small.max_entries = 16;
    sb_session *s2 = new_session(d, &small);
    sb_tree *t2 = session_tree(s2);
    CHECK_STATUS(prefill(s2, 20, &last), SB_STATUS_CAPACITY);
    CHECK_STATUS(sb_session_draft(s2, t2), SB_STATUS_INVALID_STATE);
    CHECK_OK(prefill(s2, 2, &last));
    RUN_LOOP(s2, t2, &last, 1);
    sb_tree_free(t2);
    sb_session_free(s2);

    /* Still usable: a full loop, a one-token prompt, a long prompt. */
    FULL_LOOP(s, t, 5);
    CHECK_OK(prefill(s, 1, &last));
    RUN_LOOP(s, t, &last, 3);
    CHECK_OK(prefill(s, MAX_PROMPT, &last));
    RUN_LOOP(s, t, &last, 3);
    sb_tree_free(t);
    sb_session_free(s);
    sb_drafter_free(d);
}

/* ---------------------------------------------------------------------------------------------------- */
/* sb_session_draft                                                                                     */
/* ---------------------------------------------------------------------------------------------------- */

static void test_draft_errors(void) {
    sb_drafter *d = load_drafter();
    sb_session_params sp = fixed_params();
    sb_session *s = new_session(d, &sp);
    sb_tree *t = session_tree(s);
    int32_t last = -1;

    CHECK_STATUS(sb_session_draft(NULL, t), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_session_draft(s, NULL), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_session_draft(NULL, NULL), SB_STATUS_NULL_ARGUMENT);
    CHECK_OK(prefill(s, 5, &last));
    CHECK_STATUS(sb_session_draft(s, NULL), SB_STATUS_NULL_ARGUMENT);

    /* Trees smaller than sb_session_tree_params asks for: a capacity error, never a crash. The
     * fixed shape (24 nodes; SpecBlock over 8 levels, EAGLE-3 over 7 + 1) needs more nodes than 1
     * or 8 and deeper nodes than depth 1. */
    struct {
        uint32_t max_nodes, max_depth;
        sb_status want;
    } small[4] = {
        {1, SB_MAX_DEPTH, SB_STATUS_CAPACITY},
        {8, SB_MAX_DEPTH, SB_STATUS_CAPACITY},
        {SB_MAX_NODES, 1, SB_STATUS_DEPTH_LIMIT},
        {1, 1, SB_STATUS_CAPACITY},
    };
    for (int i = 0; i < 4; i++) {
        sb_tree *tiny = small_tree(small[i].max_nodes, small[i].max_depth);
        CHECK_STATUS(sb_session_draft(s, tiny), small[i].want);
        CHECK_EQ(sb_tree_is_finalized(tiny), 0);
        /* The failed draft is not committable; the session drafts again into a good tree. */
        CHECK_STATUS(sb_session_commit(s, NULL, 0, toy_next(last), g_feats, 1), SB_STATUS_INVALID_STATE);
        sb_tree_free(tiny);
    }
    RUN_LOOP(s, t, &last, 3);
    /* Between iterations too. */
    sb_tree *tiny = small_tree(1, 1);
    CHECK_STATUS(sb_session_draft(s, tiny), SB_STATUS_CAPACITY);
    RUN_LOOP(s, t, &last, 3);
    /* A failed draft after a good one withdraws the good one: nothing is left to commit (both kinds). */
    CHECK_OK(sb_session_draft(s, t));
    CHECK_STATUS(sb_session_draft(s, tiny), SB_STATUS_CAPACITY);
    CHECK_STATUS(sb_session_commit(s, NULL, 0, toy_next(last), g_feats, 1), SB_STATUS_INVALID_STATE);
    RUN_LOOP(s, t, &last, 3);
    sb_tree_free(tiny);
    sb_tree_free(t);
    sb_session_free(s);

    /* The adaptive policy's first draft is a plain step (the root alone): any tree holds it. */
    sp = adaptive_params();
    s = new_session(d, &sp);
    t = session_tree(s);
    tiny = small_tree(1, 1);
    CHECK_OK(prefill(s, 5, &last));
    CHECK_OK(sb_session_draft(s, tiny));
    CHECK_EQ(sb_tree_len(tiny), 1);
    CHECK_OK(sb_session_draft(s, t)); /* drafting again replaces the draft */
    CHECK_EQ(sb_tree_len(t), 1);
    sb_tree_free(tiny);
    CHECK_OK(prefill(s, 5, &last));
    RUN_LOOP(s, t, &last, 12);
    sb_tree_free(t);
    sb_session_free(s);

    /* The tree sb_session_tree_params asks for holds every candidate at the widest beam (SpecBlock's
     * block 1 and its block-2 seeds grow with it; an EAGLE-3 session ignores it). */
    sp = fixed_params();
    sp.budget = 90;
    sp.max_seeds = UINT32_MAX;
    sp.beam_width = 120;
    s = new_session(d, &sp);
    t = session_tree(s);
    FULL_LOOP(s, t, 1);
    sb_tree_free(t);
    sb_session_free(s);
    sb_drafter_free(d);
}

/* ---------------------------------------------------------------------------------------------------- */
/* sb_session_commit                                                                                    */
/* ---------------------------------------------------------------------------------------------------- */

/* Drafts and verifies one tree: fills `acc` and the feature rows of its kept nodes. */
static void draft_and_verify(sb_session *s, sb_tree *t, sb_accept *acc) {
    CHECK_OK(sb_session_draft(s, t));
    uint32_t n = sb_tree_len(t);
    CHECK_OK(sb_tree_tokens(t, g_nodes, n));
    for (uint32_t i = 0; i < n; i++) g_argmax[i] = toy_next(g_nodes[i]);
    CHECK_OK(sb_verify_greedy(t, g_argmax, n, acc));
    for (uint32_t j = 0; j < acc->n_keep; j++) toy_features(g_nodes[acc->keep[j]], feat_row(j));
}

static void test_commit_errors(void) {
    sb_drafter *d = load_drafter();
    sb_session_params sp = fixed_params();
    sb_session *s = new_session(d, &sp);
    sb_tree *t = session_tree(s);
    int32_t last = -1;
    CHECK_OK(prefill(s, 5, &last));

    /* Root-only commits on a real draft (nothing accepted) and accepted-token commits. */
    for (int round = 0; round < 2; round++) {
        sb_accept acc;
        draft_and_verify(s, t, &acc);
        int32_t toks[SB_MAX_KEEP + 1];
        uint32_t na = round == 0 ? 0 : acc.n_accepted;
        for (uint32_t i = 0; i < SB_MAX_KEEP + 1; i++) toks[i] = i < na ? acc.tokens[i] : 7;
        int32_t bonus = na == acc.n_accepted ? acc.bonus_token : toy_next(last);
        if (round == 0) {
            toy_features(last, feat_row(0));
        }

        CHECK_STATUS(sb_session_commit(NULL, toks, na, bonus, g_feats, na + 1), SB_STATUS_NULL_ARGUMENT);
        CHECK_STATUS(sb_session_commit(s, NULL, 1, bonus, g_feats, 2), SB_STATUS_NULL_ARGUMENT);
        CHECK_STATUS(sb_session_commit(s, toks, na, bonus, NULL, na + 1), SB_STATUS_NULL_ARGUMENT);
        /* Feature rows must be n_accepted + 1. */
        CHECK_STATUS(sb_session_commit(s, toks, na, bonus, g_feats, na), SB_STATUS_SHAPE_MISMATCH);
        CHECK_STATUS(sb_session_commit(s, toks, na, bonus, g_feats, na + 2), SB_STATUS_SHAPE_MISMATCH);
        CHECK_STATUS(sb_session_commit(s, toks, na, bonus, NULL, 0), SB_STATUS_SHAPE_MISMATCH);
        CHECK_STATUS(sb_session_commit(s, toks, na, bonus, g_feats, UINT32_MAX), SB_STATUS_SHAPE_MISMATCH);
        /* Tokens outside the vocabulary. */
        CHECK_STATUS(sb_session_commit(s, toks, na, -1, g_feats, na + 1), SB_STATUS_TOKEN_OUT_OF_RANGE);
        CHECK_STATUS(sb_session_commit(s, toks, na, (int32_t)TOY_VOCAB, g_feats, na + 1),
                     SB_STATUS_TOKEN_OUT_OF_RANGE);
        CHECK_STATUS(sb_session_commit(s, toks, na, INT32_MIN, g_feats, na + 1), SB_STATUS_TOKEN_OUT_OF_RANGE);
        CHECK_STATUS(sb_session_commit(s, toks, na, INT32_MAX, g_feats, na + 1), SB_STATUS_TOKEN_OUT_OF_RANGE);
        if (na > 0) {
            int32_t keep0 = toks[0];
            toks[0] = -5;
            CHECK_STATUS(sb_session_commit(s, toks, na, bonus, g_feats, na + 1), SB_STATUS_TOKEN_OUT_OF_RANGE);
            toks[0] = (int32_t)TOY_VOCAB;
            CHECK_STATUS(sb_session_commit(s, toks, na, bonus, g_feats, na + 1), SB_STATUS_TOKEN_OUT_OF_RANGE);
            toks[0] = keep0;
        }
        /* More accepted tokens than any path can have (the root plus SB_MAX_DEPTH rows). */
        CHECK_STATUS(sb_session_commit(s, toks, SB_MAX_KEEP, bonus, g_feats, SB_MAX_KEEP + 1),
                     SB_STATUS_CAPACITY);
        CHECK_STATUS(sb_session_commit(s, toks, SB_MAX_KEEP + 1, bonus, g_feats, SB_MAX_KEEP + 2),
                     SB_STATUS_CAPACITY);
        /* Non-finite features: refused, and nothing changes (the same commit then succeeds). */
        float saved = feat_row(na)[3];
        feat_row(na)[3] = NAN;
        CHECK_STATUS(sb_session_commit(s, toks, na, bonus, g_feats, na + 1), SB_STATUS_NON_FINITE);
        feat_row(na)[3] = INFINITY;
        CHECK_STATUS(sb_session_commit(s, toks, na, bonus, g_feats, na + 1), SB_STATUS_NON_FINITE);
        feat_row(na)[3] = saved;
        float saved0 = feat_row(0)[0];
        feat_row(0)[0] = -INFINITY;
        CHECK_STATUS(sb_session_commit(s, toks, na, bonus, g_feats, na + 1), SB_STATUS_NON_FINITE);
        feat_row(0)[0] = saved0;

        CHECK_OK(sb_session_commit(s, toks, na, bonus, g_feats, na + 1));
        CHECK_STATUS(sb_session_commit(s, toks, na, bonus, g_feats, na + 1), SB_STATUS_INVALID_STATE);
        sb_feedback fb = {(uint32_t)sizeof(sb_feedback), sb_tree_len(t), na + 1, 0, 1e-3, 0.0};
        CHECK_OK(sb_session_feedback(s, &fb));
        last = bonus;
    }
    RUN_LOOP(s, t, &last, 5);

    /* A full context: a commit that does not fit is refused with a capacity error. */
    sb_session_params small = fixed_params();
    small.max_entries = 24;
    sb_session *s2 = new_session(d, &small);
    sb_tree *t2 = session_tree(s2);
    CHECK_OK(prefill(s2, 20, &last));
    sb_status st = SB_STATUS_OK;
    const char *step = "";
    uint32_t emitted = 0;
    for (int i = 0; i < 30 && st == SB_STATUS_OK; i++) st = iterate(s2, t2, &last, &emitted, &step);
    CHECK_STATUS(st, SB_STATUS_CAPACITY);
    CHECK(strcmp(step, "commit") == 0);
    /* The context stays full; a new sequence fits again. */
    FULL_LOOP(s2, t2, 2);
    sb_tree_free(t2);
    sb_session_free(s2);

    FULL_LOOP(s, t, 4);
    sb_tree_free(t);
    sb_session_free(s);
    sb_drafter_free(d);
}

/* A session whose only arm is plain decoding: every draft is the root alone, every commit is
 * deferred to the next real draft. */
static void test_plain_steps(void) {
    sb_drafter *d = load_drafter();
    sb_arm plain = plain_arm();
    sb_session_params sp = adaptive_params();
    sp.arms = &plain;
    sp.n_arms = 1;
    sb_session *s = new_session(d, &sp);
    sb_tree *t = session_tree(s);
    int32_t last = -1;
    CHECK_OK(prefill(s, 5, &last));
    CHECK_OK(sb_session_draft(s, t));
    CHECK_EQ(sb_tree_len(t), 1);
    int32_t bonus = toy_next(last);
    int32_t one[1] = {bonus};
    toy_features(last, feat_row(0));
    toy_features(bonus, feat_row(1));
    /* A plain step accepts no draft tokens. */
    CHECK_STATUS(sb_session_commit(s, one, 1, toy_next(bonus), g_feats, 2), SB_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(sb_session_commit(s, NULL, 0, bonus, g_feats, 2), SB_STATUS_SHAPE_MISMATCH);
    CHECK_STATUS(sb_session_commit(s, NULL, 0, -1, g_feats, 1), SB_STATUS_TOKEN_OUT_OF_RANGE);
    CHECK_STATUS(sb_session_commit(s, NULL, 0, (int32_t)TOY_VOCAB, g_feats, 1), SB_STATUS_TOKEN_OUT_OF_RANGE);
    feat_row(0)[5] = NAN;
    CHECK_STATUS(sb_session_commit(s, NULL, 0, bonus, g_feats, 1), SB_STATUS_NON_FINITE);
    toy_features(last, feat_row(0));
    CHECK_OK(sb_session_commit(s, NULL, 0, bonus, g_feats, 1));
    CHECK_STATUS(sb_session_commit(s, NULL, 0, bonus, g_feats, 1), SB_STATUS_INVALID_STATE);
    sb_feedback fb = {(uint32_t)sizeof(sb_feedback), 1, 2, 0, 1e-3, 0.0};
    CHECK_STATUS(sb_session_feedback(s, &fb), SB_STATUS_INVALID_ARGUMENT); /* 2 tokens from 1 row */
    fb.tokens = 1;
    CHECK_OK(sb_session_feedback(s, &fb));
    last = bonus;
    /* More plain steps than the drafter's plain-step window (16). */
    RUN_LOOP(s, t, &last, 20);
    sb_tree_free(t);
    sb_session_free(s);

    /* Deferred entries count against the context too. */
    sb_session_params small = sp;
    small.max_entries = 8;
    s = new_session(d, &small);
    t = session_tree(s);
    CHECK_OK(prefill(s, 5, &last));
    sb_status st = SB_STATUS_OK;
    const char *step = "";
    uint32_t emitted = 0;
    for (int i = 0; i < 20 && st == SB_STATUS_OK; i++) st = iterate(s, t, &last, &emitted, &step);
    CHECK_STATUS(st, SB_STATUS_CAPACITY);
    CHECK(strcmp(step, "commit") == 0);
    FULL_LOOP(s, t, 2);
    sb_tree_free(t);
    sb_session_free(s);
    sb_drafter_free(d);
}

/* ---------------------------------------------------------------------------------------------------- */
/* sb_session_feedback and sb_session_get_stats                                                         */
/* ---------------------------------------------------------------------------------------------------- */

static void test_feedback_errors(void) {
    sb_drafter *d = load_drafter();
    sb_session_params sp = adaptive_params();
    sb_session *s = new_session(d, &sp);
    sb_tree *t = session_tree(s);
    sb_feedback good = {(uint32_t)sizeof(sb_feedback), 3, 2, 0, 1e-3, 0.0};

    CHECK_STATUS(sb_session_feedback(NULL, &good), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_session_feedback(s, NULL), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_session_feedback(NULL, NULL), SB_STATUS_NULL_ARGUMENT);

    FULL_LOOP(s, t, 4);
    sb_session_stats before, after;
    sb_arm_stats arms_before[32], arms_after[32];
    memset(arms_before, 0, sizeof arms_before);
    memset(arms_after, 0, sizeof arms_after);
    CHECK_OK(sb_session_get_stats(s, &before, arms_before, 32));
    CHECK_EQ(before.iterations, 4);

    sb_feedback bad[] = {
        /* NaN / inf seconds */
        {(uint32_t)sizeof(sb_feedback), 3, 2, 0, NAN, 0.0},
        {(uint32_t)sizeof(sb_feedback), 3, 2, 0, INFINITY, 0.0},
        {(uint32_t)sizeof(sb_feedback), 3, 2, 0, -INFINITY, 0.0},
        {(uint32_t)sizeof(sb_feedback), 3, 2, SB_FEEDBACK_DRAFT_MEASURED, 1e-3, NAN},
        {(uint32_t)sizeof(sb_feedback), 3, 2, SB_FEEDBACK_DRAFT_MEASURED, 1e-3, INFINITY},
        /* negative seconds */
        {(uint32_t)sizeof(sb_feedback), 3, 2, 0, -1e-3, 0.0},
        {(uint32_t)sizeof(sb_feedback), 3, 2, SB_FEEDBACK_DRAFT_MEASURED, 1e-3, -1e-3},
        /* rows, tokens */
        {(uint32_t)sizeof(sb_feedback), 0, 1, 0, 1e-3, 0.0},
        {(uint32_t)sizeof(sb_feedback), 3, 0, 0, 1e-3, 0.0},
        {(uint32_t)sizeof(sb_feedback), 0, 0, 0, 1e-3, 0.0},
        {(uint32_t)sizeof(sb_feedback), 3, 4, 0, 1e-3, 0.0},
        {(uint32_t)sizeof(sb_feedback), 1, UINT32_MAX, 0, 1e-3, 0.0},
        /* unknown flags */
        {(uint32_t)sizeof(sb_feedback), 3, 2, 2, 1e-3, 0.0},
        {(uint32_t)sizeof(sb_feedback), 3, 2, 0x80000000u | SB_FEEDBACK_DRAFT_MEASURED, 1e-3, 0.0},
        /* struct_size */
        {0, 3, 2, 0, 1e-3, 0.0},
        {4, 3, 2, 0, 1e-3, 0.0},
        {(uint32_t)sizeof(sb_feedback) - 8, 3, 2, 0, 1e-3, 0.0},
        {(uint32_t)sizeof(sb_feedback) + 8, 3, 2, 0, 1e-3, 0.0},
        {UINT32_MAX, 3, 2, 0, 1e-3, 0.0},
    };
    static const sb_status want[] = {
        SB_STATUS_NON_FINITE,       SB_STATUS_NON_FINITE,       SB_STATUS_NON_FINITE,
        SB_STATUS_NON_FINITE,       SB_STATUS_NON_FINITE,       SB_STATUS_INVALID_ARGUMENT,
        SB_STATUS_INVALID_ARGUMENT, SB_STATUS_INVALID_ARGUMENT, SB_STATUS_INVALID_ARGUMENT,
        SB_STATUS_INVALID_ARGUMENT, SB_STATUS_INVALID_ARGUMENT, SB_STATUS_INVALID_ARGUMENT,
        SB_STATUS_INVALID_ARGUMENT, SB_STATUS_INVALID_ARGUMENT, SB_STATUS_STRUCT_SIZE,
        SB_STATUS_STRUCT_SIZE,      SB_STATUS_STRUCT_SIZE,      SB_STATUS_STRUCT_SIZE,
        SB_STATUS_STRUCT_SIZE,
    };
    _Static_assert(sizeof bad / sizeof bad[0] == sizeof want / sizeof want[0], "one status per case");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_STATUS(sb_session_feedback(s, &bad[i]), want[i]);
        /* Nothing changes on error. */
        CHECK_OK(sb_session_get_stats(s, &after, arms_after, 32));
        int same = stats_equal(&before, &after);
        for (uint32_t a = 0; a < before.n_arms && a < 32; a++) same &= arm_stats_equal(&arms_before[a], &arms_after[a]);
        CHECK(same);
        if (!same) fprintf(stderr, "%s:%d: feedback case %zu changed the statistics\n", __FILE__, __LINE__, i);
    }
    /* draft_seconds is read only with SB_FEEDBACK_DRAFT_MEASURED: unflagged, NaN there is ignored. */
    sb_feedback unflagged = {(uint32_t)sizeof(sb_feedback), 3, 2, 0, 1e-3, NAN};
    /* Every report needs a draft of its own (the loop's last one was reported). */
    CHECK_STATUS(sb_session_feedback(s, &unflagged), SB_STATUS_INVALID_STATE);
    CHECK_OK(sb_session_draft(s, t));
    unflagged.rows = sb_tree_len(t);
    unflagged.tokens = 1;
    CHECK_OK(sb_session_feedback(s, &unflagged));
    CHECK_STATUS(sb_session_feedback(s, &unflagged), SB_STATUS_INVALID_STATE);
    CHECK_OK(sb_session_get_stats(s, &after, NULL, 0));
    CHECK_EQ(after.iterations, before.iterations + 1);
    /* Boundary values are accepted: zero seconds, tokens == rows, a measured zero draft time. */
    sb_feedback edge = {(uint32_t)sizeof(sb_feedback), 5, 5, SB_FEEDBACK_DRAFT_MEASURED, 0.0, 0.0};
    CHECK_OK(sb_session_draft(s, t));
    CHECK_OK(sb_session_feedback(s, &edge));
    CHECK_OK(sb_session_get_stats(s, &after, NULL, 0));
    CHECK_EQ(after.iterations, before.iterations + 2);

    /* The session goes on. */
    int32_t last = -1;
    CHECK_OK(prefill(s, 5, &last));
    RUN_LOOP(s, t, &last, 8);
    sb_tree_free(t);
    sb_session_free(s);

    /* A report before any draft counts nothing: it is refused and the statistics stay empty. */
    s = new_session(d, &sp);
    CHECK_STATUS(sb_session_feedback(s, &good), SB_STATUS_INVALID_STATE);
    CHECK_OK(sb_session_get_stats(s, &after, NULL, 0));
    CHECK_EQ(after.iterations, 0);
    t = session_tree(s);
    FULL_LOOP(s, t, 4);
    sb_tree_free(t);
    sb_session_free(s);
    sb_drafter_free(d);
}

static void test_get_stats(void) {
    sb_drafter *d = load_drafter();
    sb_arm given[3];
    given[0] = plain_arm();
    given[1] = own_arm(4);
    given[2] = own_arm(8);
    given[2].min_confidence = 0.25f;
    sb_session_params sp = adaptive_params();
    sp.arms = given;
    sp.n_arms = 3;
    sb_session *s = new_session(d, &sp);
    sb_session_stats st, untouched;
    sb_arm_stats arms[8];
    memset(&st, 0xEE, sizeof st);
    memcpy(&untouched, &st, sizeof st);
    memset(arms, 0xEE, sizeof arms);
    sb_arm_stats poison;
    memset(&poison, 0xEE, sizeof poison);

    CHECK_STATUS(sb_session_get_stats(NULL, &st, arms, 8), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_session_get_stats(s, NULL, arms, 8), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_session_get_stats(s, &st, NULL, 1), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_session_get_stats(s, NULL, NULL, 0), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_session_get_stats(NULL, NULL, NULL, 0), SB_STATUS_NULL_ARGUMENT);
    /* Nothing was written by the failed calls. */
    CHECK(memcmp(&st, &untouched, sizeof st) == 0);
    CHECK(memcmp(&arms[0], &poison, sizeof poison) == 0);

    /* (NULL, 0): the summary alone. */
    CHECK_OK(sb_session_get_stats(s, &st, NULL, 0));
    CHECK_EQ(st.n_arms, 3);
    CHECK_EQ(st.iterations, 0);
    CHECK(st.mean_accept_length == 0.0);
    CHECK(st.current_arm < 3);
    /* A buffer larger than the arms: the rest is not written. */
    CHECK_OK(sb_session_get_stats(s, &st, arms, 8));
    for (uint32_t a = 0; a < 3; a++) {
        CHECK(arm_equal(&arms[a].arm, &given[a]));
        CHECK_EQ(arms[a].pulls, 0);
        CHECK_EQ(arms[a].tokens, 0);
        CHECK(arms[a].seconds == 0.0 && arms[a].tokens_per_second == 0.0);
    }
    for (uint32_t a = 3; a < 8; a++) CHECK(memcmp(&arms[a], &poison, sizeof poison) == 0);
    /* A smaller one: only the first arms_cap. */
    memset(arms, 0xEE, sizeof arms);
    CHECK_OK(sb_session_get_stats(s, &st, arms, 2));
    CHECK_EQ(st.n_arms, 3);
    CHECK(arm_equal(&arms[0].arm, &given[0]));
    CHECK(arm_equal(&arms[1].arm, &given[1]));
    CHECK(memcmp(&arms[2], &poison, sizeof poison) == 0);
    /* arms_cap 0 with a buffer: nothing written there. */
    memset(arms, 0xEE, sizeof arms);
    CHECK_OK(sb_session_get_stats(s, &st, arms, 0));
    CHECK(memcmp(&arms[0], &poison, sizeof poison) == 0);

    /* After a run the statistics add up. */
    sb_tree *t = session_tree(s);
    FULL_LOOP(s, t, 10);
    CHECK_OK(sb_session_get_stats(s, &st, arms, 8));
    CHECK_EQ(st.iterations, 10);
    CHECK(st.mean_accept_length >= 1.0);
    CHECK(st.current_arm < 3);
    uint64_t pulls = 0, tokens = 0;
    for (uint32_t a = 0; a < 3; a++) {
        pulls += arms[a].pulls;
        tokens += arms[a].tokens;
        CHECK(arms[a].seconds >= 0.0 && arms[a].tokens_per_second >= 0.0);
    }
    CHECK_EQ(pulls, 10);
    CHECK(fabs((double)tokens / 10.0 - st.mean_accept_length) < 1e-9);
    sb_tree_free(t);
    sb_session_free(s);

    /* The default ladder: 9 arms, the plain one first. */
    sp = adaptive_params();
    s = new_session(d, &sp);
    CHECK_OK(sb_session_get_stats(s, &st, arms, 1));
    CHECK_EQ(st.n_arms, 9);
    CHECK_EQ(arms[0].arm.kind, SB_ARM_PLAIN);
    sb_session_free(s);
    sb_drafter_free(d);
}

/* ---------------------------------------------------------------------------------------------------- */
/* A drafter freed before its sessions                                                                  */
/* ---------------------------------------------------------------------------------------------------- */

static void test_drafter_freed_first(void) {
    sb_drafter *d = load_drafter();
    sb_session_params fixed = fixed_params();
    sb_session_params adaptive = adaptive_params();
    sb_session *s1 = new_session(d, &fixed);
    sb_session *s2 = new_session(d, &adaptive);
    int32_t last = -1;
    CHECK_OK(prefill(s1, 5, &last));
    sb_drafter_free(d); /* the sessions keep the drafter alive */

    sb_tree *t1 = session_tree(s1);
    RUN_LOOP(s1, t1, &last, 5);
    sb_session_free(s1); /* not the last session: the drafter stays */
    sb_tree *t2 = session_tree(s2);
    FULL_LOOP(s2, t2, 8);
    sb_session_stats st;
    CHECK_OK(sb_session_get_stats(s2, &st, NULL, 0));
    CHECK_EQ(st.iterations, 8);
    sb_session_free(s2); /* the last one frees the drafter */
    sb_tree_free(t1);
    sb_tree_free(t2);

    /* A session created and freed right away, after its drafter. */
    d = load_drafter();
    sb_session *s3 = new_session(d, &adaptive);
    sb_drafter_free(d);
    sb_session_free(s3);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Online adapter: sb_adapter_*, sb_session_attach_adapter, sb_session_detach_adapter                   */
/* ---------------------------------------------------------------------------------------------------- */

static void test_adapter_defaults(void) {
    CHECK_EQ(SB_ADAPT_OFF, 0);
    CHECK_EQ(SB_ADAPT_BANDIT, 1);
    CHECK_EQ(SB_ADAPT_ALWAYS, 2);
    sb_adapter_params ap = sb_adapter_default_params();
    CHECK_EQ(ap.struct_size, sizeof(sb_adapter_params));
    CHECK_EQ(ap.rank, 8);
    CHECK_EQ(ap.capacity, 1024);
    CHECK_EQ(ap.mode, SB_ADAPT_BANDIT);
    CHECK_EQ(ap.decide_every, 48);
    CHECK_EQ(ap.holdout, 64);
    CHECK_EQ(ap.min_train, 64);
    CHECK_EQ(ap.batch, 128);
    CHECK_EQ(ap.always_steps, 4);
    CHECK(ap.learning_rate == 2e-3f);
    CHECK(ap.horizon_tokens == 2048.0);
    CHECK(ap.confidence_z == 1.0);
}

/* Small sizes, so that decision points come after a few iterations of the tiny fixtures. */
static sb_adapter_params quick_adapter_params(uint32_t mode) {
    sb_adapter_params ap = sb_adapter_default_params();
    ap.mode = mode;
    ap.capacity = 64;
    ap.decide_every = 4;
    ap.holdout = 4;
    ap.min_train = 4;
    ap.batch = 8;
    ap.always_steps = 4;
    return ap;
}

static sb_adapter *new_adapter(const sb_drafter *d, const sb_adapter_params *ap) {
    sb_adapter *a = NULL;
    CHECK_OK(sb_adapter_new(d, ap, &a));
    return a;
}

static sb_adapter_stats adapter_stats_at(const sb_adapter *a, int line) {
    sb_adapter_stats st;
    memset(&st, 0, sizeof st);
    CHECK_STATUS_AT(sb_adapter_get_stats(a, &st), SB_STATUS_OK, line);
    return st;
}

#define ADAPTER_STATS(a) adapter_stats_at((a), __LINE__)

/* Counters that hold whatever the updates did: every decision skipped or tried one arm (the default
 * always_steps is one of the arms), every tried update was adopted or rejected, one version per
 * adoption (no load here). */
static void check_adapter_invariants_at(const sb_adapter_stats *st, int line) {
    CHECK_AT(st->decisions == st->skipped + st->tried_1 + st->tried_4 + st->tried_16, line);
    CHECK_AT(st->tried_1 + st->tried_4 + st->tried_16 == st->adopted + st->rejected, line);
    CHECK_AT(st->failed <= st->rejected, line);
    CHECK_AT(st->version == st->adopted, line);
    CHECK_AT(st->slots_accepted <= st->slots_recorded, line);
    CHECK_AT(isfinite(st->update_seconds) && st->update_seconds >= 0.0, line);
    CHECK_AT(isfinite(st->expected_saved_seconds), line);
    CHECK_AT(isfinite(st->last_delta) && st->last_delta >= -1.0 && st->last_delta <= 1.0, line);
}

#define CHECK_ADAPTER_INVARIANTS(st) check_adapter_invariants_at((st), __LINE__)

static void adapter_new_expect_at(const sb_drafter *d, const sb_adapter_params *ap, sb_status want,
                                  int line) {
    sb_adapter *a = SENTINEL(sb_adapter);
    sb_status s = sb_adapter_new(d, ap, &a);
    CHECK_STATUS_AT(s, want, line);
    if (want == SB_STATUS_OK) {
        CHECK_AT(a != SENTINEL(sb_adapter) && a != NULL, line);
    } else {
        CHECK_AT(a == SENTINEL(sb_adapter), line); /* nothing written on error */
    }
    if (s == SB_STATUS_OK && a != SENTINEL(sb_adapter)) sb_adapter_free(a);
}

#define ADAPTER_NEW_EXPECT(d, ap, want) adapter_new_expect_at((d), (ap), (want), __LINE__)

static void test_adapter_new_errors(void) {
    sb_drafter *d = load_drafter();
    const sb_adapter_params def = sb_adapter_default_params();
    sb_adapter_params ap = def;

    /* NULL arguments. */
    ADAPTER_NEW_EXPECT(NULL, &ap, SB_STATUS_NULL_ARGUMENT);
    ADAPTER_NEW_EXPECT(d, NULL, SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_adapter_new(d, &ap, NULL), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_adapter_new(NULL, NULL, NULL), SB_STATUS_NULL_ARGUMENT);

    /* struct_size: only this library's. */
    static const uint32_t bad_sizes[6] = {0, 4, 24, (uint32_t)sizeof(sb_adapter_params) - 8,
                                          (uint32_t)sizeof(sb_adapter_params) + 8, UINT32_MAX};
    for (int i = 0; i < 6; i++) {
        ap = def;
        ap.struct_size = bad_sizes[i];
        ADAPTER_NEW_EXPECT(d, &ap, SB_STATUS_STRUCT_SIZE);
    }

    /* Values outside their ranges. */
#define BAD_FIELD(field, value, want)       \
    do {                                    \
        ap = def;                           \
        ap.field = (value);                 \
        ADAPTER_NEW_EXPECT(d, &ap, (want)); \
    } while (0)
    BAD_FIELD(rank, 0, SB_STATUS_INVALID_ARGUMENT);
    BAD_FIELD(rank, 65, SB_STATUS_INVALID_ARGUMENT);
    BAD_FIELD(capacity, 0, SB_STATUS_INVALID_ARGUMENT);
    BAD_FIELD(capacity, def.holdout + def.min_train - 1, SB_STATUS_INVALID_ARGUMENT);
    BAD_FIELD(capacity, (1u << 20) + 1, SB_STATUS_INVALID_ARGUMENT);
    BAD_FIELD(mode, 3, SB_STATUS_INVALID_ARGUMENT);
    BAD_FIELD(mode, 7, SB_STATUS_INVALID_ARGUMENT);
    BAD_FIELD(mode, UINT32_MAX, SB_STATUS_INVALID_ARGUMENT);
    BAD_FIELD(decide_every, 0, SB_STATUS_INVALID_ARGUMENT);
    BAD_FIELD(holdout, 0, SB_STATUS_INVALID_ARGUMENT);
    BAD_FIELD(min_train, 0, SB_STATUS_INVALID_ARGUMENT);
    BAD_FIELD(batch, 0, SB_STATUS_INVALID_ARGUMENT);
    BAD_FIELD(batch, 4097, SB_STATUS_INVALID_ARGUMENT);
    BAD_FIELD(always_steps, 0, SB_STATUS_INVALID_ARGUMENT);
    BAD_FIELD(always_steps, 1025, SB_STATUS_INVALID_ARGUMENT);
    BAD_FIELD(learning_rate, -1e-3f, SB_STATUS_INVALID_ARGUMENT);
    BAD_FIELD(learning_rate, NAN, SB_STATUS_NON_FINITE);
    BAD_FIELD(learning_rate, INFINITY, SB_STATUS_NON_FINITE);
    BAD_FIELD(horizon_tokens, NAN, SB_STATUS_NON_FINITE);
    BAD_FIELD(horizon_tokens, INFINITY, SB_STATUS_NON_FINITE);
    BAD_FIELD(horizon_tokens, 0.0, SB_STATUS_INVALID_ARGUMENT);
    BAD_FIELD(horizon_tokens, -5.0, SB_STATUS_INVALID_ARGUMENT);
    BAD_FIELD(confidence_z, NAN, SB_STATUS_NON_FINITE);
    BAD_FIELD(confidence_z, -INFINITY, SB_STATUS_NON_FINITE);
    BAD_FIELD(confidence_z, -0.5, SB_STATUS_INVALID_ARGUMENT);
    /* holdout 4097 also needs a capacity that could hold it. */
    ap = def;
    ap.holdout = 4097;
    ap.capacity = 8192;
    ADAPTER_NEW_EXPECT(d, &ap, SB_STATUS_INVALID_ARGUMENT);
#undef BAD_FIELD

    /* At the edges of the ranges, and every mode. */
    ap = def;
    ADAPTER_NEW_EXPECT(d, &ap, SB_STATUS_OK);
    ap.rank = 1;
    ADAPTER_NEW_EXPECT(d, &ap, SB_STATUS_OK);
    ap.rank = 64;
    ADAPTER_NEW_EXPECT(d, &ap, SB_STATUS_OK);
    ap = def;
    ap.capacity = def.holdout + def.min_train;
    ADAPTER_NEW_EXPECT(d, &ap, SB_STATUS_OK);
    ap = def;
    ap.learning_rate = 0.0f;
    ap.confidence_z = 0.0;
    ADAPTER_NEW_EXPECT(d, &ap, SB_STATUS_OK);
    for (uint32_t m = SB_ADAPT_OFF; m <= SB_ADAPT_ALWAYS; m++) {
        ap = quick_adapter_params(m);
        ADAPTER_NEW_EXPECT(d, &ap, SB_STATUS_OK);
    }

    /* A fresh adapter has done nothing; get_stats' errors write nothing. */
    ap = def;
    sb_adapter *a = new_adapter(d, &ap);
    sb_adapter_stats st, untouched;
    memset(&st, 0xEE, sizeof st);
    memcpy(&untouched, &st, sizeof st);
    CHECK_STATUS(sb_adapter_get_stats(NULL, &st), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_adapter_get_stats(a, NULL), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_adapter_get_stats(NULL, NULL), SB_STATUS_NULL_ARGUMENT);
    CHECK(memcmp(&st, &untouched, sizeof st) == 0);
    st = ADAPTER_STATS(a);
    CHECK_EQ(st.decisions, 0);
    CHECK_EQ(st.skipped + st.tried_1 + st.tried_4 + st.tried_16, 0);
    CHECK_EQ(st.adopted + st.rejected + st.failed, 0);
    CHECK_EQ(st.slots_recorded + st.slots_accepted, 0);
    CHECK_EQ(st.version, 0);
    CHECK(st.update_seconds == 0.0 && st.expected_saved_seconds == 0.0 && st.last_delta == 0.0);

    /* The adapter copies what it needs: it outlives its drafter. */
    sb_drafter_free(d);
    st = ADAPTER_STATS(a);
    CHECK_EQ(st.version, 0);
    sb_adapter_free(a);
    sb_adapter_free(NULL); /* no-op */
}

static void test_adapter_set_policy(void) {
    sb_drafter *d = load_drafter();
    sb_session_params sp = fixed_params();
    sb_session *s = new_session(d, &sp);
    sb_tree *t = session_tree(s);
    const sb_adapter_params quick = quick_adapter_params(SB_ADAPT_ALWAYS);
    sb_adapter *a = new_adapter(d, &quick);
    CHECK_OK(sb_session_attach_adapter(s, a));
    sb_adapter_params ap = quick;

    CHECK_STATUS(sb_adapter_set_policy(NULL, &ap), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_adapter_set_policy(a, NULL), SB_STATUS_NULL_ARGUMENT);
    /* Each refused call below asks for mode OFF among its changes: recording must go on after it. */
    ap = quick;
    ap.mode = SB_ADAPT_OFF;
    ap.struct_size = (uint32_t)sizeof(sb_adapter_params) - 8;
    CHECK_STATUS(sb_adapter_set_policy(a, &ap), SB_STATUS_STRUCT_SIZE);
#define BAD_POLICY(field, value, want)                        \
    do {                                                     \
        ap = quick;                                          \
        ap.mode = SB_ADAPT_OFF;                              \
        ap.field = (value);                                  \
        CHECK_STATUS(sb_adapter_set_policy(a, &ap), (want)); \
    } while (0)
    BAD_POLICY(rank, quick.rank + 1, SB_STATUS_INVALID_ARGUMENT);     /* fixed at creation */
    BAD_POLICY(capacity, quick.capacity * 2, SB_STATUS_INVALID_ARGUMENT);
    BAD_POLICY(capacity, quick.capacity - 1, SB_STATUS_INVALID_ARGUMENT);
    BAD_POLICY(holdout, quick.holdout + 1, SB_STATUS_INVALID_ARGUMENT); /* above creation sizes */
    BAD_POLICY(batch, quick.batch + 1, SB_STATUS_INVALID_ARGUMENT);
    BAD_POLICY(decide_every, 0, SB_STATUS_INVALID_ARGUMENT);
    BAD_POLICY(always_steps, 0, SB_STATUS_INVALID_ARGUMENT);
    BAD_POLICY(learning_rate, -1.0f, SB_STATUS_INVALID_ARGUMENT);
    BAD_POLICY(learning_rate, NAN, SB_STATUS_NON_FINITE);
    BAD_POLICY(horizon_tokens, NAN, SB_STATUS_NON_FINITE);
    BAD_POLICY(confidence_z, INFINITY, SB_STATUS_NON_FINITE);
#undef BAD_POLICY
    ap = quick;
    ap.mode = 7;
    CHECK_STATUS(sb_adapter_set_policy(a, &ap), SB_STATUS_INVALID_ARGUMENT);

    sb_adapter_stats before = ADAPTER_STATS(a);
    CHECK_EQ(before.slots_recorded, 0);
    FULL_LOOP(s, t, 12);
    sb_adapter_stats st = ADAPTER_STATS(a);
    CHECK(st.slots_recorded >= 12); /* still ALWAYS: every verified path is recorded */
    CHECK(st.decisions > 0);
    CHECK_ADAPTER_INVARIANTS(&st);

    /* OFF: nothing recorded, no decisions; the counters stay. */
    ap = quick;
    ap.mode = SB_ADAPT_OFF;
    CHECK_OK(sb_adapter_set_policy(a, &ap));
    sb_adapter_stats off = ADAPTER_STATS(a);
    CHECK(memcmp(&off, &st, sizeof st) == 0);
    FULL_LOOP(s, t, 8);
    off = ADAPTER_STATS(a);
    CHECK_EQ(off.slots_recorded, st.slots_recorded);
    CHECK_EQ(off.decisions, st.decisions);
    CHECK_EQ(off.version, st.version);

    /* Back on, with smaller sizes and another learning rate: recording and decisions resume. */
    ap = quick;
    ap.mode = SB_ADAPT_BANDIT;
    ap.holdout = 2;
    ap.min_train = 2;
    ap.batch = 4;
    ap.decide_every = 2;
    ap.learning_rate = 1e-2f;
    CHECK_OK(sb_adapter_set_policy(a, &ap));
    FULL_LOOP(s, t, 12);
    sb_adapter_stats on = ADAPTER_STATS(a);
    CHECK(on.slots_recorded >= st.slots_recorded + 12);
    CHECK(on.decisions > st.decisions);
    CHECK_ADAPTER_INVARIANTS(&on);

    sb_tree_free(t);
    sb_session_free(s);
    sb_adapter_free(a);
    sb_drafter_free(d);
}

static void test_adapter_sessions(void) {
    sb_drafter *d = load_drafter();
    sb_session_params fixed = fixed_params();
    sb_session *s = new_session(d, &fixed);
    sb_tree *t = session_tree(s);
    const sb_adapter_params quick = quick_adapter_params(SB_ADAPT_ALWAYS);
    sb_adapter *a = new_adapter(d, &quick);

    CHECK_STATUS(sb_session_attach_adapter(NULL, a), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_session_attach_adapter(s, NULL), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_session_attach_adapter(NULL, NULL), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_session_detach_adapter(NULL), SB_STATUS_NULL_ARGUMENT);
    CHECK_OK(sb_session_detach_adapter(s)); /* none attached: a no-op */

    /* ALWAYS with small sizes: decisions come, every update is adopted, the drafts stay exact (the
     * loop checks the emitted tokens against the target's greedy output). */
    CHECK_OK(sb_session_attach_adapter(s, a));
    CHECK_OK(sb_session_attach_adapter(s, a)); /* again: replaces itself */
    FULL_LOOP(s, t, 30);
    sb_adapter_stats st = ADAPTER_STATS(a);
    CHECK(st.slots_recorded >= 30); /* every drafted iteration records at least its first slot */
    CHECK(st.decisions > 0);
    CHECK(st.tried_4 > 0);
    CHECK_EQ(st.tried_1 + st.tried_16, 0);
    CHECK_EQ(st.skipped, 0);
    CHECK_EQ(st.adopted, st.tried_4); /* ALWAYS adopts without replay */
    CHECK_EQ(st.rejected, 0);
    CHECK_ADAPTER_INVARIANTS(&st);
    sb_session_stats ss;
    CHECK_OK(sb_session_get_stats(s, &ss, NULL, 0));
    CHECK_EQ(ss.iterations, 30);

    /* Detached: the session drafts on, nothing more is recorded. */
    CHECK_OK(sb_session_detach_adapter(s));
    CHECK_OK(sb_session_detach_adapter(s));
    FULL_LOOP(s, t, 6);
    sb_adapter_stats after = ADAPTER_STATS(a);
    CHECK_EQ(after.slots_recorded, st.slots_recorded);
    CHECK_EQ(after.decisions, st.decisions);

    /* Two sessions (one adaptive) share the adapter; both record into it. */
    sb_session_params adaptive = adaptive_params();
    sb_session *s2 = new_session(d, &adaptive);
    sb_tree *t2 = session_tree(s2);
    CHECK_OK(sb_session_attach_adapter(s, a));
    CHECK_OK(sb_session_attach_adapter(s2, a));
    FULL_LOOP(s, t, 10);
    sb_adapter_stats mid = ADAPTER_STATS(a);
    CHECK(mid.slots_recorded >= after.slots_recorded + 10);
    FULL_LOOP(s2, t2, 20);
    sb_adapter_stats both = ADAPTER_STATS(a);
    CHECK(both.slots_recorded > mid.slots_recorded); /* the adaptive session drafted some trees */
    CHECK(both.decisions >= mid.decisions);
    CHECK_ADAPTER_INVARIANTS(&both);

    /* The adapter freed before its sessions: they keep it alive and keep adapting with it. */
    sb_adapter_free(a);
    FULL_LOOP(s, t, 8);
    CHECK_OK(sb_session_detach_adapter(s2)); /* s keeps the last reference */
    FULL_LOOP(s2, t2, 4);
    FULL_LOOP(s, t, 4);
    CHECK_OK(sb_session_detach_adapter(s)); /* the adapter's memory goes here */
    FULL_LOOP(s, t, 4);

    /* An adapter freed while still attached, and the session freed after it. */
    a = new_adapter(d, &quick);
    CHECK_OK(sb_session_attach_adapter(s2, a));
    sb_adapter_free(a);
    FULL_LOOP(s2, t2, 6);
    sb_session_free(s2);

    sb_tree_free(t);
    sb_tree_free(t2);
    sb_session_free(s);
    sb_drafter_free(d);
}

/* The fixture of the other kind (argv[2], optional). The two fixtures share hidden width 64, draft
 * vocabulary 120 and target vocabulary 300, but an adapter learns one drafter kind's head: attaching
 * it to a session of the other kind is refused, shapes alike or not. */
static const char *g_other_dir;

static void test_adapter_other_kind(void) {
    if (g_other_dir == NULL) return;
    sb_drafter_params dp = sb_drafter_default_params();
    sb_drafter *other = NULL;
    char err[256] = {0};
    CHECK_OK(sb_drafter_load(g_other_dir, &dp, g_embed, EMBED_LEN, &other, err, sizeof err));
    if (other == NULL) {
        fprintf(stderr, "sb_drafter_load(%s): %s\n", g_other_dir, err);
        return;
    }
    sb_drafter_info oi;
    CHECK_OK(sb_drafter_get_info(other, &oi));
    CHECK(oi.kind != g_info.kind);
    int same_shape = oi.hidden == g_info.hidden && oi.draft_vocab == g_info.draft_vocab &&
                     oi.vocab == g_info.vocab;
    CHECK(same_shape); /* the premise above */
    CHECK_EQ(oi.feature_width, g_info.feature_width); /* the loops' feature rows fit both */
    if (oi.feature_width != g_info.feature_width) {
        sb_drafter_free(other);
        return;
    }

    sb_drafter *d = load_drafter();
    const sb_adapter_params quick = quick_adapter_params(SB_ADAPT_ALWAYS);
    sb_adapter *mine = new_adapter(d, &quick);   /* made for this fixture's drafter */
    sb_adapter *theirs = new_adapter(other, &quick);
    sb_session_params fixed = fixed_params();
    sb_session *s = new_session(d, &fixed); /* a session of this fixture's kind */
    sb_tree *t = session_tree(s);

    /* This fixture's adapter attached to a session of the other kind, on the other's drafter. */
    sb_session *os = new_session(other, &fixed);
    sb_tree *ot = session_tree(os);
    sb_status want_mine_on_other = SB_STATUS_INVALID_ARGUMENT;
    CHECK_STATUS(sb_session_attach_adapter(os, mine), want_mine_on_other);
    /* And the other's adapter on this fixture's session. */
    sb_status want_theirs_here = SB_STATUS_INVALID_ARGUMENT;
    CHECK_STATUS(sb_session_attach_adapter(s, theirs), want_theirs_here);

    /* Either way the sessions work, and an attached adapter records. */
    FULL_LOOP(s, t, 10);
    FULL_LOOP(os, ot, 10);
    sb_adapter_stats ms = ADAPTER_STATS(mine);
    sb_adapter_stats ts = ADAPTER_STATS(theirs);
    CHECK((ms.slots_recorded > 0) == (want_mine_on_other == SB_STATUS_OK));
    CHECK((ts.slots_recorded > 0) == (want_theirs_here == SB_STATUS_OK));
    CHECK_ADAPTER_INVARIANTS(&ms);
    CHECK_ADAPTER_INVARIANTS(&ts);
    /* A refused attach left an attached adapter in place. */
    sb_adapter *own = new_adapter(other, &quick);
    CHECK_OK(sb_session_attach_adapter(os, own));
    sb_adapter_stats before = ADAPTER_STATS(own);
    CHECK_STATUS(sb_session_attach_adapter(os, mine), want_mine_on_other);
    FULL_LOOP(os, ot, 6);
    sb_adapter_stats after = ADAPTER_STATS(own);
    CHECK(after.slots_recorded >= before.slots_recorded + 6);

    sb_tree_free(t);
    sb_tree_free(ot);
    sb_session_free(s);
    sb_session_free(os);
    sb_adapter_free(mine);
    sb_adapter_free(theirs);
    sb_adapter_free(own);
    sb_drafter_free(d);
    sb_drafter_free(other);
}

/* Files: the argument checks that come before any file is touched. */
static void test_adapter_file_args(void) {
    sb_drafter *d = load_drafter();
    sb_adapter_params ap = quick_adapter_params(SB_ADAPT_ALWAYS);
    sb_adapter *a = new_adapter(d, &ap);
    static const char bad_utf8[] = {'a', (char)0xff, (char)0xfe, '.', 's', 't', 0};
    CHECK_STATUS(sb_adapter_save(NULL, "x.safetensors"), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_adapter_save(a, NULL), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_adapter_save(a, bad_utf8), SB_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(sb_adapter_load(NULL, "x.safetensors"), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_adapter_load(a, NULL), SB_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(sb_adapter_load(a, bad_utf8), SB_STATUS_INVALID_ARGUMENT);
    sb_adapter_stats st = ADAPTER_STATS(a);
    CHECK_EQ(st.version, 0);
    sb_adapter_free(a);
    sb_drafter_free(d);
}

#ifdef SB_TEST_ADAPTER_FILES
/* Save and load (built with -DSB_TEST_ADAPTER_FILES by the `adapter_files` test of tests/c_api.rs):
 * files go to $SB_TEST_SCRATCH. */

static void scratch_path(char *buf, size_t cap, const char *name) {
    const char *dir = getenv("SB_TEST_SCRATCH");
    snprintf(buf, cap, "%s/%s_%s", dir ? dir : "/tmp", g_eagle3 ? "eagle3" : "specblock", name);
}

/* The bytes of a file (malloc'd; NULL if unreadable), and its size. */
static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? 2 * cap : 4096;
            unsigned char *grown = realloc(buf, cap);
            if (!grown) break;
            buf = grown;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    fclose(f);
    *len = n;
    return buf;
}

static void test_adapter_files(void) {
    char p1[512], p2[512], junk[512], missing[512], no_dir[512];
    scratch_path(p1, sizeof p1, "adapter1.safetensors");
    scratch_path(p2, sizeof p2, "adapter2.safetensors");
    scratch_path(junk, sizeof junk, "junk.safetensors");
    scratch_path(missing, sizeof missing, "missing.safetensors");
    scratch_path(no_dir, sizeof no_dir, "no/such/dir/adapter.safetensors");
    remove(missing);

    sb_drafter *d = load_drafter();
    sb_session_params fixed = fixed_params();
    sb_session *s = new_session(d, &fixed);
    sb_tree *t = session_tree(s);
    const sb_adapter_params quick = quick_adapter_params(SB_ADAPT_ALWAYS);
    sb_adapter *a = new_adapter(d, &quick);
    CHECK_OK(sb_session_attach_adapter(s, a));
    FULL_LOOP(s, t, 20);
    sb_adapter_stats sa = ADAPTER_STATS(a);
    CHECK(sa.version > 0);

    /* Save, load into a fresh adapter, save again: the same bytes. */
    CHECK_OK(sb_adapter_save(a, p1));
    sb_adapter *b = new_adapter(d, &quick);
    CHECK_OK(sb_adapter_load(b, p1));
    sb_adapter_stats sb = ADAPTER_STATS(b);
    CHECK_EQ(sb.version, 1);
    CHECK_EQ(sb.slots_recorded, 0);
    CHECK_OK(sb_adapter_save(b, p2));
    size_t n1 = 0, n2 = 0;
    unsigned char *f1 = read_file(p1, &n1);
    unsigned char *f2 = read_file(p2, &n2);
    CHECK(f1 != NULL && f2 != NULL && n1 > 0 && n1 == n2 && memcmp(f1, f2, n1) == 0);
    free(f1);
    free(f2);

    /* Errors change nothing: a missing file, a file that is not an adapter, another rank, a
     * directory that does not exist. */
    FILE *f = fopen(junk, "wb");
    CHECK(f != NULL);
    if (f) {
        fputs("not a safetensors file", f);
        fclose(f);
    }
    sb_adapter_params other_rank = quick;
    other_rank.rank = quick.rank / 2;
    sb_adapter *c = new_adapter(d, &other_rank);
    CHECK_STATUS(sb_adapter_load(b, missing), SB_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(sb_adapter_load(b, junk), SB_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(sb_adapter_load(c, p1), SB_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(sb_adapter_save(a, no_dir), SB_STATUS_INVALID_ARGUMENT);
    CHECK_EQ(ADAPTER_STATS(b).version, 1);
    CHECK_EQ(ADAPTER_STATS(c).version, 0);

    /* A session drafts with loaded weights, exactly (the loop checks the output). */
    CHECK_OK(sb_session_attach_adapter(s, b));
    FULL_LOOP(s, t, 8);
    CHECK_OK(sb_adapter_load(b, p1)); /* while attached: picked up at the next draft */
    FULL_LOOP(s, t, 4);

    remove(p1);
    remove(p2);
    remove(junk);
    sb_tree_free(t);
    sb_session_free(s);
    sb_adapter_free(a);
    sb_adapter_free(b);
    sb_adapter_free(c);
    sb_drafter_free(d);
}
#endif

/* ---------------------------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DRAFTER_DIR [OTHER_KIND_DRAFTER_DIR]\n", argv[0]);
        return 2;
    }
    g_dir = argv[1];
    g_other_dir = argc > 2 ? argv[2] : NULL;
    g_embed = malloc(sizeof(float) * EMBED_LEN);
    g_nodes = malloc(sizeof(int32_t) * (SB_MAX_NODES + 1));
    g_argmax = malloc(sizeof(int32_t) * (SB_MAX_NODES + 1));
    if (!g_embed || !g_nodes || !g_argmax) {
        fprintf(stderr, "out of memory\n");
        return 2;
    }
    for (uint32_t i = 0; i < EMBED_LEN; i++) {
        g_embed[i] = (float)((i * 7919u) % 2001u) / 1000.0f - 1.0f;
    }
    sb_drafter *d = load_drafter();
    if (d == NULL || sb_drafter_get_info(d, &g_info) != SB_STATUS_OK) {
        fprintf(stderr, "cannot load the drafter in %s\n", g_dir);
        printf("%d passed, %d failed\n", g_passed, g_failed + 1);
        return 1;
    }
    sb_drafter_free(d);
    CHECK(g_info.kind == SB_DRAFTER_KIND_SPECBLOCK || g_info.kind == SB_DRAFTER_KIND_EAGLE3);
    g_eagle3 = g_info.kind == SB_DRAFTER_KIND_EAGLE3;
    g_feats = malloc(sizeof(float) * MAX_ROWS * g_info.feature_width);
    if (!g_feats) {
        fprintf(stderr, "out of memory\n");
        return 2;
    }
    printf("drafter %s: %s, vocab %u, feature width %u\n", g_dir, g_eagle3 ? "EAGLE-3" : "SpecBlock",
           g_info.vocab, g_info.feature_width);

    test_defaults();
    test_load_errors();
    test_info();
    test_session_new_errors();
    test_tree_params();
    test_call_order();
    test_prefill_errors();
    test_draft_errors();
    test_commit_errors();
    test_plain_steps();
    test_feedback_errors();
    test_get_stats();
    test_drafter_freed_first();
    test_adapter_defaults();
    test_adapter_new_errors();
    test_adapter_set_policy();
    test_adapter_sessions();
    test_adapter_other_kind();
    test_adapter_file_args();
#ifdef SB_TEST_ADAPTER_FILES
    test_adapter_files();
#endif

    free(g_embed);
    free(g_nodes);
    free(g_argmax);
    free(g_feats);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
