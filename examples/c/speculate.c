/*
 * Speculative decoding from C with a SpecBlock drafter (or the EAGLE-3 baseline: the same calls; the
 * kind comes from the drafter's config.json): load a drafter, then per iteration draft a tree, verify it
 * against the target, accept greedily and commit the accepted path. Usage: speculate [DRAFTER_DIR].
 *
 * The target here is a toy supplied through callbacks (a real engine runs its model instead): its
 * greedy next token after token t is a fixed function of t, and its "features" of a position are a
 * fixed function of the token there. The drafter is a tiny reference drafter of the test fixtures
 * (drafter_tiny or eagle3_tiny: vocabulary 300, width 64, features 144 wide); its embedding is
 * generated here.
 *
 * Each session runs under a draft-shape policy: adaptive by default (every sb_session_draft picks the
 * iteration's shape, plain decoding included, from what sb_session_feedback reports: rows verified,
 * tokens emitted, verification seconds), or one fixed shape. The toy's verification cost grows with
 * the tree's rows, as on a CPU.
 *
 * The program checks that speculative output equals the toy target's plain greedy output under the
 * adaptive policy, under a fixed shape, and through a caller compiled against the first layout of
 * sb_session_params (whose drafter handle is freed before its session is used); that bad feedback is refused with a status and leaves the session usable; and
 * prints the policy's statistics. It exits non-zero on any failure.
 *
 *   speculate [DRAFTER_DIR]   (default: tools/engine/tests/fixtures/drafter_tiny)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "specblock.h"

#define NEW_TOKENS 40

/* The target as the engine would expose it. */
typedef struct {
    int32_t (*next_token)(void *user, int32_t token);           /* greedy token after `token` */
    void (*features)(void *user, int32_t token, float *out, uint32_t width);
    void *user;
} target_callbacks;

static int32_t toy_next(void *user, int32_t token) {
    uint32_t vocab = *(const uint32_t *)user;
    return (int32_t)(((uint32_t)token * 37u + 11u) % vocab);
}

static void toy_features(void *user, int32_t token, float *out, uint32_t width) {
    (void)user;
    for (uint32_t i = 0; i < width; i++) {
        out[i] = (float)(((uint32_t)token * 2654435761u + i * 40503u) % 1000u) / 500.0f - 1.0f;
    }
}

static int fail(const char *what, sb_status s) {
    fprintf(stderr, "%s: %s\n", what, sb_status_str((int32_t)s));
    return 1;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "tools/engine/tests/fixtures/drafter_tiny";
    int rc = 1;
    sb_drafter *drafter = NULL;
    sb_session *session = NULL;
    sb_tree *tree = NULL;
    float *embedding = NULL, *feats = NULL;
    int32_t *node_tokens = NULL, *argmax = NULL;

    /* The drafter reads the target's embedding; a toy one of the fixture's shape (300 x 64). */
    const uint32_t vocab = 300, hidden = 64;
    embedding = malloc(sizeof(float) * vocab * hidden);
    if (!embedding) goto done;
    for (uint32_t i = 0; i < vocab * hidden; i++) {
        embedding[i] = (float)((i * 7919u) % 2001u) / 1000.0f - 1.0f;
    }
    sb_drafter_params dp = sb_drafter_default_params();
    char err[256] = {0};
    sb_status s = sb_drafter_load(dir, &dp, embedding, (uint64_t)vocab * hidden, &drafter, err, sizeof err);
    if (s != SB_STATUS_OK) {
        fprintf(stderr, "sb_drafter_load(%s): %s: %s\n", dir, sb_status_str((int32_t)s), err);
        goto done;
    }
    sb_drafter_info info;
    if ((s = sb_drafter_get_info(drafter, &info)) != SB_STATUS_OK) { rc = fail("info", s); goto done; }
    printf("drafter: %s, hidden %u, features %u, vocab %u, draft vocab %u, %u slots\n",
           info.kind == SB_DRAFTER_KIND_EAGLE3 ? "EAGLE-3" : "SpecBlock", info.hidden,
           info.feature_width, info.vocab, info.draft_vocab, info.slots);

    uint32_t toy_vocab = info.vocab;
    target_callbacks target = {toy_next, toy_features, &toy_vocab};

    /* Plain greedy reference output of the toy target. */
    int32_t prompt[5] = {3, 14, 15, 92, 65};
    int32_t want[NEW_TOKENS];
    int32_t t = prompt[4];
    for (int i = 0; i < NEW_TOKENS; i++) want[i] = t = target.next_token(target.user, t);
    uint32_t fw = info.feature_width;
    feats = malloc(sizeof(float) * fw * (SB_MAX_KEEP > 5 ? SB_MAX_KEEP : 5));
    if (!feats) goto done;

    /* Three sessions: the adaptive default, a fixed 24-node tree, and a caller built against the first
     * layout of sb_session_params (six uint32_t: it gets a fixed tree at its budget, as it always did). */
    for (int pass = 0; pass < 3; pass++) {
        sb_session_params sp = sb_session_default_params();
        sp.max_entries = 256;
        if (pass == 1) {
            sp.policy = SB_POLICY_FIXED;
            sp.budget = 24;
        }
        if (pass == 2) {
            struct {
                uint32_t struct_size, max_entries, budget, beam_width, eagle_depth, eagle_top_k;
            } first_layout = {24, 256, 24, 10, 7, 10};
            s = sb_session_new(drafter, (const sb_session_params *)(const void *)&first_layout, &session);
        } else {
            s = sb_session_new(drafter, &sp, &session);
        }
        if (s != SB_STATUS_OK) { rc = fail("session", s); goto done; }
        if (pass == 2) {
            /* Sessions keep their drafter alive: the handle may go first. */
            sb_drafter_free(drafter);
            drafter = NULL;
        }
        /* The tree the session's drafts need. */
        sb_tree_params tp;
        if ((s = sb_session_get_tree_params(session, &tp)) != SB_STATUS_OK) { rc = fail("tree params", s); goto done; }
        if ((s = sb_tree_new(&tp, &tree)) != SB_STATUS_OK) { rc = fail("tree", s); goto done; }
        node_tokens = malloc(sizeof(int32_t) * tp.max_nodes);
        argmax = malloc(sizeof(int32_t) * tp.max_nodes);
        if (!node_tokens || !argmax) goto done;

        /* Prefill: features of the prompt positions, then the first sampled token. */
        for (int i = 0; i < 5; i++) target.features(target.user, prompt[i], feats + (size_t)i * fw, fw);
        int32_t chain[6];
        memcpy(chain, prompt, sizeof prompt);
        chain[5] = target.next_token(target.user, prompt[4]);
        if ((s = sb_session_prefill(session, feats, 5, chain, 6)) != SB_STATUS_OK) { rc = fail("prefill", s); goto done; }

        int32_t got[NEW_TOKENS + SB_MAX_KEEP];
        int n_got = 0, iterations = 0, plain_steps = 0;
        got[n_got++] = chain[5];
        while (n_got < NEW_TOKENS) {
            if ((s = sb_session_draft(session, tree)) != SB_STATUS_OK) { rc = fail("draft", s); goto done; }
            uint32_t n = sb_tree_len(tree);
            plain_steps += n == 1; /* the policy chose no drafting: verify the root alone */
            if ((s = sb_tree_tokens(tree, node_tokens, n)) != SB_STATUS_OK) { rc = fail("tokens", s); goto done; }
            /* The target's verify pass: its greedy token after every tree node. */
            for (uint32_t i = 0; i < n; i++) argmax[i] = target.next_token(target.user, node_tokens[i]);
            sb_accept acc;
            if ((s = sb_verify_greedy(tree, argmax, n, &acc)) != SB_STATUS_OK) { rc = fail("verify", s); goto done; }
            for (uint32_t i = 0; i < acc.n_accepted; i++) got[n_got++] = acc.tokens[i];
            got[n_got++] = acc.bonus_token;
            /* Features of the kept rows: the root and the accepted nodes. */
            for (uint32_t j = 0; j < acc.n_keep; j++) {
                target.features(target.user, node_tokens[acc.keep[j]], feats + (size_t)j * fw, fw);
            }
            s = sb_session_commit(session, acc.tokens, acc.n_accepted, acc.bonus_token, feats, acc.n_keep);
            if (s != SB_STATUS_OK) { rc = fail("commit", s); goto done; }
            /* What verification cost: a real engine times its forward; the toy's cost grows with rows. */
            sb_feedback fb = {sizeof(sb_feedback), n, acc.n_accepted + 1, 0, 1e-3 + 2e-4 * n, 0.0};
            if ((s = sb_session_feedback(session, &fb)) != SB_STATUS_OK) { rc = fail("feedback", s); goto done; }
            iterations++;
        }
        for (int i = 0; i < NEW_TOKENS; i++) {
            if (got[i] != want[i]) {
                fprintf(stderr, "pass %d, token %d: speculative %d, plain %d\n", pass, i, got[i], want[i]);
                goto done;
            }
        }
        /* Bad feedback is refused, and the session goes on. */
        sb_feedback bad[4] = {
            {sizeof(sb_feedback), 3, 4, 0, 1e-3, 0.0},                              /* tokens > rows */
            {sizeof(sb_feedback), 3, 1, 0, -1e-3, 0.0},                             /* negative */
            {sizeof(sb_feedback), 3, 1, SB_FEEDBACK_DRAFT_MEASURED, 1e-3, NAN},       /* NaN */
            {sizeof(sb_feedback), 0, 0, 0, 1e-3, 0.0},                              /* no rows */
        };
        for (int i = 0; i < 4; i++) {
            if (sb_session_feedback(session, &bad[i]) == SB_STATUS_OK) {
                fprintf(stderr, "bad feedback %d was accepted\n", i);
                goto done;
            }
        }
        if ((s = sb_session_draft(session, tree)) != SB_STATUS_OK) { rc = fail("draft after bad feedback", s); goto done; }

        sb_session_stats st;
        sb_arm_stats arms[32];
        if ((s = sb_session_get_stats(session, &st, arms, 32)) != SB_STATUS_OK) { rc = fail("stats", s); goto done; }
        if (st.iterations != (uint64_t)iterations) {
            fprintf(stderr, "stats: %llu iterations, ran %d\n", (unsigned long long)st.iterations, iterations);
            goto done;
        }
        printf("%s: %d tokens in %d iterations (%d plain steps), mean accept length %.2f, identical to plain greedy decoding\n",
               pass == 0 ? "adaptive policy" : pass == 1 ? "fixed 24-node tree" : "first-layout params",
               NEW_TOKENS, iterations, plain_steps, st.mean_accept_length);
        for (uint32_t a = 0; a < st.n_arms && a < 32; a++) {
            if (arms[a].pulls == 0) continue;
            printf("  arm %u (kind %u, budget %u): %llu iterations, %.0f tokens/s\n", a, arms[a].arm.kind,
                   arms[a].arm.budget, (unsigned long long)arms[a].pulls, arms[a].tokens_per_second);
        }
        sb_tree_free(tree);
        tree = NULL;
        sb_session_free(session);
        session = NULL;
        free(node_tokens);
        free(argmax);
        node_tokens = argmax = NULL;
    }
    rc = 0;
done:
    sb_tree_free(tree);
    sb_session_free(session);
    sb_drafter_free(drafter);
    free(embedding);
    free(feats);
    free(node_tokens);
    free(argmax);
    return rc;
}
