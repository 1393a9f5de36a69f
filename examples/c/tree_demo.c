/*
 * tree_demo: one speculative-decoding step through the specblock C API.
 *
 *   1. build a draft tree for the committed text "the" (a greedy chain plus alternatives, one duplicate);
 *   2. finalize it with a node budget smaller than the number of candidates;
 *   3. print every verification layout an engine might feed to its target model;
 *   4. verify the draft against a fake target model, greedily and by lossless sampling.
 *
 * Build: make demo   (or: cc -std=c11 -Iinclude examples/c/tree_demo.c target/release/libspecblock.a
 *                          -lpthread -ldl -lm -o tree_demo)
 */

#include "specblock.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* A toy vocabulary so the output reads as text. */
enum { VOCAB = 16 };
static const char *const WORDS[VOCAB] = {"<s>", "the", "cat", "sat", "on",  "mat", "a",   "dog",
                                         "ran", "to",  "park", "hat", "big", "red", ".", "and"};
enum { T_THE = 1, T_CAT, T_SAT, T_ON, T_MAT, T_A, T_DOG, T_RAN, T_TO, T_PARK, T_HAT, T_BIG, T_RED, T_DOT };

static const char *word(int32_t token) {
    return (token >= 0 && token < VOCAB) ? WORDS[token] : "?";
}

/* The fake target model: its most likely next token after each token (a bigram table). */
static int32_t target_next(int32_t token) {
    switch (token) {
    case T_THE: return T_CAT;
    case T_CAT: return T_SAT;
    case T_SAT: return T_ON;
    case T_ON: return T_A;
    case T_A: return T_HAT;
    case T_DOG: return T_RAN;
    case T_RAN: return T_TO;
    default: return T_DOT;
    }
}

/* Evaluates `call`; on failure prints the call and the status text and jumps to `fail`. */
#define TRY(call)                                                                                   \
    do {                                                                                            \
        sb_status st_ = (call);                                                                     \
        if (st_ != SB_STATUS_OK) {                                                                  \
            fprintf(stderr, "error: %s failed: %s (status %d)\n", #call, sb_status_str((int32_t)st_), \
                    (int)st_);                                                                      \
            goto fail;                                                                              \
        }                                                                                           \
    } while (0)

/* Allocates `count` elements of `size` bytes, or jumps to `fail`. */
#define ALLOC(ptr, count)                                                                           \
    do {                                                                                            \
        (ptr) = malloc(((count) > 0 ? (size_t)(count) : 1) * sizeof(*(ptr)));                       \
        if ((ptr) == NULL) {                                                                        \
            fprintf(stderr, "error: out of memory\n");                                              \
            goto fail;                                                                              \
        }                                                                                           \
    } while (0)

static void print_row(const char *label, const int32_t *v, uint32_t n) {
    uint32_t i;
    printf("  %-14s", label);
    for (i = 0; i < n; i++) printf(" %4d", (int)v[i]);
    printf("\n");
}

static void print_accept(const sb_accept *acc) {
    uint32_t i;
    printf("  accepted %u draft token(s):", (unsigned)acc->n_accepted);
    for (i = 0; i < acc->n_accepted; i++) {
        printf(" %s(node %d)", word(acc->tokens[i]), (int)acc->nodes[i]);
    }
    printf("\n  bonus token: %s (%d)\n", word(acc->bonus_token), (int)acc->bonus_token);
    printf("  KV keep-list (tree rows kept, in cache order):");
    for (i = 0; i < acc->n_keep; i++) printf(" %d", (int)acc->keep[i]);
    printf("\n  text now: \"the");
    for (i = 0; i < acc->n_accepted; i++) printf(" %s", word(acc->tokens[i]));
    printf(" %s\"\n", word(acc->bonus_token));
}

int main(void) {
    sb_tree *tree = NULL;
    int32_t *tokens = NULL, *parents = NULL, *depths = NULL, *positions = NULL, *source = NULL;
    int32_t *first_child = NULL, *next_sibling = NULL, *paths = NULL, *seq_first = NULL;
    int32_t *seq_count = NULL, *argmax = NULL;
    float *cum = NULL, *logits = NULL;
    uint8_t *dense = NULL, *flat = NULL;
    uint32_t *bits = NULL;
    uint32_t n, i, j, leaves, depth, words, rows = 0;
    size_t flat_bytes;
    const uint32_t prefix_len = 10; /* committed tokens before the root, for positions */
    const uint32_t budget = 8;
    int status = EXIT_FAILURE;

    /* --- 1. the draft tree ------------------------------------------------------------------------ */
    {
        sb_tree_params params = sb_tree_default_params();
        int32_t cat, sat, on, the2, mat, dog, cat_dup;
        params.max_nodes = 32;
        params.max_depth = 8;
        TRY(sb_tree_new(&params, &tree));

        printf("specblock %s: one speculative decoding step after the committed text \"the\"\n\n",
               sb_version());
        TRY(sb_tree_reset(tree, T_THE));
        /* The drafter's greedy chain: "cat sat on the mat ." */
        TRY(sb_tree_add(tree, 0, T_CAT, -0.3f, &cat));
        TRY(sb_tree_add(tree, cat, T_SAT, -0.2f, &sat));
        TRY(sb_tree_add(tree, sat, T_ON, -0.4f, &on));
        TRY(sb_tree_add(tree, on, T_THE, -0.5f, &the2));
        TRY(sb_tree_add(tree, the2, T_MAT, -0.6f, &mat));
        TRY(sb_tree_add(tree, mat, T_DOT, -0.2f, NULL));
        /* Alternatives: "dog ran", "on a", "cat ran". */
        TRY(sb_tree_add(tree, 0, T_DOG, -1.6f, &dog));
        TRY(sb_tree_add(tree, dog, T_RAN, -0.5f, NULL));
        TRY(sb_tree_add(tree, on, T_A, -1.2f, NULL));
        TRY(sb_tree_add(tree, cat, T_RAN, -2.0f, NULL));
        /* A second drafter block proposes "cat sat" again, less confidently: finalize merges it. */
        TRY(sb_tree_add(tree, 0, T_CAT, -0.9f, &cat_dup));
        TRY(sb_tree_add(tree, cat_dup, T_SAT, -0.3f, NULL));
        printf("added %u candidates (\"cat\" and \"cat sat\" twice), finalize with budget %u\n",
               (unsigned)(sb_tree_len(tree) - 1), (unsigned)budget);

        TRY(sb_tree_finalize(tree, budget));
    }
    n = sb_tree_len(tree);
    leaves = sb_tree_num_leaves(tree);
    depth = sb_tree_depth(tree);
    printf("finalized tree: %u nodes (root + %u), %u leaves, depth %u\n", (unsigned)n, (unsigned)(n - 1),
           (unsigned)leaves, (unsigned)depth);

    /* --- 2. per-node arrays ----------------------------------------------------------------------- */
    ALLOC(tokens, n);
    ALLOC(parents, n);
    ALLOC(depths, n);
    ALLOC(positions, n);
    ALLOC(source, n);
    ALLOC(first_child, n);
    ALLOC(next_sibling, n);
    ALLOC(seq_first, n);
    ALLOC(seq_count, n);
    ALLOC(cum, n);
    TRY(sb_tree_tokens(tree, tokens, n));
    TRY(sb_tree_parents(tree, parents, n));
    TRY(sb_tree_depths(tree, depths, n));
    TRY(sb_tree_positions(tree, prefix_len, positions, n));
    TRY(sb_tree_source_ids(tree, source, n));
    TRY(sb_tree_first_child(tree, first_child, n));
    TRY(sb_tree_next_sibling(tree, next_sibling, n));
    TRY(sb_tree_cum_logprobs(tree, cum, n));

    printf("\n== Nodes (finalized order: depth, then cumulative log-prob) ==\n");
    printf("  node  token  word   parent  depth  pos(prefix %u)  added as  cum logprob\n",
           (unsigned)prefix_len);
    for (i = 0; i < n; i++) {
        printf("  %4u  %5d  %-5s  %6d  %5d  %13d  %8d  %11.3f\n", (unsigned)i, (int)tokens[i],
               word(tokens[i]), (int)parents[i], (int)depths[i], (int)positions[i], (int)source[i],
               (double)cum[i]);
    }

    printf("\n== Token ids, parents, depths, positions (engine inputs) ==\n");
    print_row("tokens", tokens, n);
    print_row("parents", parents, n);
    print_row("depths", depths, n);
    print_row("positions", positions, n);

    /* --- 3. attention masks ----------------------------------------------------------------------- */
    ALLOC(dense, (size_t)n * n);
    TRY(sb_tree_mask_dense(tree, dense, (size_t)n * n));
    printf("\n== Dense ancestor mask (row = query node, column = key node; 1 = may attend) ==\n");
    printf("       ");
    for (j = 0; j < n; j++) printf("%2u", (unsigned)j);
    printf("\n");
    for (i = 0; i < n; i++) {
        printf("  %3u  ", (unsigned)i);
        for (j = 0; j < n; j++) printf(" %c", dense[i * n + j] ? '1' : '.');
        printf("\n");
    }

    words = sb_tree_mask_words_per_row(tree, 0);
    ALLOC(bits, (size_t)n * words);
    TRY(sb_tree_mask_bits(tree, 0, bits, (size_t)n * words));
    printf("\n== Bit-packed mask rows, prefix_len 0 (TRT-LLM packed mask; %u uint32 word(s) per row) ==\n",
           (unsigned)words);
    for (i = 0; i < n; i++) {
        printf("  row %2u:", (unsigned)i);
        for (j = 0; j < words; j++) printf(" 0x%08X", (unsigned)bits[i * words + j]);
        printf("\n");
    }

    flat_bytes = sb_tree_mask_flat_bytes(tree, 0);
    ALLOC(flat, flat_bytes);
    TRY(sb_tree_mask_flat_bits(tree, 0, flat, flat_bytes));
    printf("\n== Flat packed mask, prefix_len 0 (FlashInfer custom_mask, %zu bytes) ==\n  ", flat_bytes);
    for (i = 0; i < flat_bytes; i++) printf("%02X%s", (unsigned)flat[i], (i + 1) % 16 == 0 ? "\n  " : " ");
    printf("\n");

    /* --- 4. tree-walk layouts --------------------------------------------------------------------- */
    ALLOC(paths, (size_t)leaves * (depth + 1));
    TRY(sb_tree_retrieve_paths(tree, depth + 1, paths, (size_t)leaves * (depth + 1), &rows));
    printf("\n== Retrieve paths (EAGLE retrieve_indices: one root-to-leaf row per leaf, -1 padded) ==\n");
    for (i = 0; i < rows; i++) {
        printf("  path %u:", (unsigned)i);
        for (j = 0; j <= depth; j++) printf(" %3d", (int)paths[i * (depth + 1) + j]);
        printf("   \"");
        for (j = 1; j <= depth && paths[i * (depth + 1) + j] >= 0; j++) {
            printf("%s%s", j > 1 ? " " : "", word(tokens[paths[i * (depth + 1) + j]]));
        }
        printf("\"\n");
    }

    printf("\n== First child / next sibling (SGLang retrive_next_token / retrive_next_sibling) ==\n");
    print_row("first_child", first_child, n);
    print_row("next_sibling", next_sibling, n);

    TRY(sb_tree_seq_ranges(tree, 0, leaves, seq_first, seq_count, n));
    printf("\n== llama.cpp sequences (leaf k = seq k; node i is in seqs first..first+count-1) ==\n");
    for (i = 0; i < n; i++) {
        printf("  node %2u (%-5s): seq", (unsigned)i, word(tokens[i]));
        for (j = 0; j < (uint32_t)seq_count[i]; j++) printf(" %d", (int)(seq_first[i] + (int32_t)j));
        printf("\n");
    }

    /* --- 5. verification -------------------------------------------------------------------------- */
    ALLOC(argmax, n);
    for (i = 0; i < n; i++) argmax[i] = target_next(tokens[i]);
    printf("\n== Greedy verification (target argmax after each node) ==\n");
    print_row("target argmax", argmax, n);
    {
        sb_accept acc;
        TRY(sb_verify_greedy(tree, argmax, n, &acc));
        print_accept(&acc);
    }

    /* Fake logits: the target's favourite next token scores 4, a runner-up 2.5, the rest a little noise. */
    ALLOC(logits, (size_t)n * VOCAB);
    {
        uint32_t noise = 12345u;
        for (i = 0; i < n; i++) {
            for (j = 0; j < VOCAB; j++) {
                noise = noise * 1103515245u + 12345u;
                logits[i * VOCAB + j] = (float)((noise >> 16) % 1000u) / 1000.0f;
            }
            logits[i * VOCAB + (uint32_t)argmax[i]] = 4.0f;
            logits[i * VOCAB + (uint32_t)(argmax[i] + 1) % VOCAB] = 2.5f;
        }
    }
    {
        sb_sampling sampling = sb_sampling_default_params();
        sb_accept acc;
        const uint64_t seed = 1234;
        sampling.temperature = 0.8f;
        sampling.top_k = 8;
        sampling.top_p = 0.95f;
        printf("\n== Sampling verification (vocab %d, temperature %.1f, top_k %d, top_p %.2f, seed %llu) ==\n",
               VOCAB, (double)sampling.temperature, (int)sampling.top_k, (double)sampling.top_p,
               (unsigned long long)seed);
        TRY(sb_verify_sample(tree, logits, n, VOCAB, &sampling, seed, &acc));
        print_accept(&acc);
    }

    status = EXIT_SUCCESS;
fail:
    free(tokens);
    free(parents);
    free(depths);
    free(positions);
    free(source);
    free(first_child);
    free(next_sibling);
    free(seq_first);
    free(seq_count);
    free(cum);
    free(dense);
    free(bits);
    free(flat);
    free(paths);
    free(argmax);
    free(logits);
    sb_tree_free(tree);
    return status;
}
