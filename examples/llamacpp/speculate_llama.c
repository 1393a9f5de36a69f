/*
 * SpecBlock speculative decoding inside llama.cpp: llama.cpp runs the target model, libspecblock drafts,
 * builds the tree, verifies, and says which KV cells to keep. See docs/llamacpp.md.
 *
 *   speculate_llama --model GGUF --drafter DIR --prompt-file FILE --max-new N [--budget N|auto]
 *                   [--max-seeds S] [--eagle-depth D] [--eagle-topk K] [--temperature T] [--seed S]
 *                   [--threads N] [--flash-attn on|off|auto] [--exact] [--json] [--check-logits]
 *
 * For every {"id", "prompt"} line of FILE (the model's chat template applied with
 * llama_chat_apply_template) it runs plain llama.cpp decoding, then speculative decoding, in this process,
 * and prints one JSON line: id, prompt_tokens, plain_ids, spec_ids, identical, plain_tokens_per_second,
 * spec_tokens_per_second, mean_accept_length, iterations (and first_diff with plain decoding's top-2 logit
 * gap there when the outputs differ). Greedy unless --temperature > 0.
 *
 * How llama.cpp verifies a tree (no tree mask in llama_batch): leaf k of the finalized tree is sequence
 * k + 1 (sb_tree_seq_ranges), every tree token carries the sequence ids of the leaves below it, and every
 * leaf sequence first holds the committed prefix (llama_memory_seq_cp from sequence 0). With a unified KV
 * cache (kv_unified) a token shared by several sequences is one cell, and each sequence attends to exactly
 * its root-to-leaf path: the tree mask. The drafter's features are the outputs of three decoder layers,
 * read through the cb_eval callback (tensors "l_out-<layer>"). After verification the accepted leaf's
 * sequence is cut after the accepted path, copied to sequence 0, and every leaf sequence is removed, the
 * rejected cells moved to a trash sequence rather than freed (see keep_accepted_path); each step then
 * checks that sequence 0 holds exactly the committed tokens and the leaf sequences nothing.
 * --check-logits re-decodes every accepted path token by token and reports the largest logit difference
 * from the tree rows.
 */

#define _POSIX_C_SOURCE 200809L

#include "ggml-backend.h"
#include "ggml.h"
#include "gguf.h"
#include "llama.h"
#include "specblock.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Sequences: 0 holds the committed text; 1..MAX_LEAF_SEQS the leaves of a draft tree (trees with more
 * leaves are refused); SCRATCH_SEQ the sequential re-decode of --check-logits; TRASH_SEQ the cells of
 * rejected tree tokens, which stay allocated (see trash_tail). */
#define MAX_LEAF_SEQS 125
#define SCRATCH_SEQ (MAX_LEAF_SEQS + 1)
#define TRASH_SEQ (MAX_LEAF_SEQS + 2)
#define N_SEQ_MAX (MAX_LEAF_SEQS + 3)
#define N_CTX 8192
/* Largest llama_decode batch (prompt chunks and trees). */
#define N_BATCH 512

/* ------------------------------------------------------------------------------------------------ */
/* Errors and small helpers                                                                         */
/* ------------------------------------------------------------------------------------------------ */

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("speculate_llama: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void check_sb(sb_status s, const char *what) {
    if (s != SB_STATUS_OK) die("%s: %s", what, sb_status_str((int32_t)s));
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory (%zu bytes)", n);
    return p;
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) die("out of memory (%zu bytes)", n);
    return q;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A growable list of token ids. */
typedef struct {
    int32_t *ids;
    size_t len, cap;
} token_list;

static void push_token(token_list *l, int32_t t) {
    if (l->len == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->ids = xrealloc(l->ids, l->cap * sizeof *l->ids);
    }
    l->ids[l->len++] = t;
}

/* ------------------------------------------------------------------------------------------------ */
/* Command line                                                                                     */
/* ------------------------------------------------------------------------------------------------ */

typedef struct {
    const char *model, *drafter, *prompt_file;
    int max_new;
    int budget; /* -1 = auto (the adaptive policy) */
    uint32_t max_seeds, eagle_depth, eagle_topk;
    float temperature;
    uint64_t seed;
    int threads;
    bool json, check_logits, exact;
    enum llama_flash_attn_type flash_attn;
} options;

static void usage(void) {
    fputs("usage: speculate_llama --model GGUF --drafter DIR --prompt-file FILE --max-new N [--budget N|auto]\n"
          "                       [--max-seeds S] [--eagle-depth D] [--eagle-topk K] [--temperature T]\n"
          "                       [--seed S] [--threads N] [--flash-attn on|off|auto] [--exact] [--json]\n"
          "                       [--check-logits]\n",
          stderr);
    exit(2);
}

static long parse_long(const char *flag, const char *v, long lo, long hi) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi) die("%s: expected an integer in [%ld, %ld], got '%s'", flag, lo, hi, v);
    return x;
}

static options parse_options(int argc, char **argv) {
    options o = {NULL, NULL, NULL, 64, -1, UINT32_MAX, 7, 10, 0.0f, 0, 2, false, false, false, LLAMA_FLASH_ATTN_TYPE_AUTO};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE                                   \
    do {                                             \
        if (!v) die("%s needs a value", a);          \
        i++;                                         \
    } while (0)
        if (!strcmp(a, "--model")) { NEED_VALUE; o.model = v; }
        else if (!strcmp(a, "--drafter")) { NEED_VALUE; o.drafter = v; }
        else if (!strcmp(a, "--prompt-file")) { NEED_VALUE; o.prompt_file = v; }
        else if (!strcmp(a, "--max-new")) { NEED_VALUE; o.max_new = (int)parse_long(a, v, 1, 1 << 20); }
        else if (!strcmp(a, "--budget")) {
            NEED_VALUE;
            o.budget = !strcmp(v, "auto") ? -1 : (int)parse_long(a, v, 1, SB_MAX_NODES);
        }
        else if (!strcmp(a, "--max-seeds")) { NEED_VALUE; o.max_seeds = (uint32_t)parse_long(a, v, 0, 1 << 20); }
        else if (!strcmp(a, "--eagle-depth")) { NEED_VALUE; o.eagle_depth = (uint32_t)parse_long(a, v, 1, 63); }
        else if (!strcmp(a, "--eagle-topk")) { NEED_VALUE; o.eagle_topk = (uint32_t)parse_long(a, v, 1, 64); }
        else if (!strcmp(a, "--temperature")) {
            NEED_VALUE;
            char *end;
            o.temperature = strtof(v, &end);
            if (*end || end == v || !(o.temperature >= 0.0f) || !isfinite(o.temperature)) die("--temperature: bad value '%s'", v);
        }
        else if (!strcmp(a, "--seed")) { NEED_VALUE; o.seed = (uint64_t)parse_long(a, v, 0, 0x7fffffffL); }
        else if (!strcmp(a, "--threads")) { NEED_VALUE; o.threads = (int)parse_long(a, v, 1, 256); }
        else if (!strcmp(a, "--json")) o.json = true;
        else if (!strcmp(a, "--check-logits")) o.check_logits = true;
        else if (!strcmp(a, "--exact")) o.exact = true;
        else if (!strcmp(a, "--flash-attn")) {
            NEED_VALUE;
            if (!strcmp(v, "on")) o.flash_attn = LLAMA_FLASH_ATTN_TYPE_ENABLED;
            else if (!strcmp(v, "off")) o.flash_attn = LLAMA_FLASH_ATTN_TYPE_DISABLED;
            else if (!strcmp(v, "auto")) o.flash_attn = LLAMA_FLASH_ATTN_TYPE_AUTO;
            else die("--flash-attn: expected on, off or auto, got '%s'", v);
        }
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) usage();
        else die("unknown argument '%s' (see --help)", a);
#undef NEED_VALUE
    }
    if (!o.model || !o.drafter || !o.prompt_file) usage();
    return o;
}

/* ------------------------------------------------------------------------------------------------ */
/* The prompt file: one JSON object per line with "id" (string or number) and "prompt" (string)       */
/* ------------------------------------------------------------------------------------------------ */

typedef struct {
    const char *p, *end;
} json_cursor;

static void json_ws(json_cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\r' || *c->p == '\n')) c->p++;
}

static void put_utf8(char **out, uint32_t cp) {
    unsigned char *o = (unsigned char *)*out;
    if (cp < 0x80) *o++ = (unsigned char)cp;
    else if (cp < 0x800) { *o++ = (unsigned char)(0xC0 | (cp >> 6)); *o++ = (unsigned char)(0x80 | (cp & 0x3F)); }
    else if (cp < 0x10000) {
        *o++ = (unsigned char)(0xE0 | (cp >> 12));
        *o++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (unsigned char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (unsigned char)(0xF0 | (cp >> 18));
        *o++ = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (unsigned char)(0x80 | (cp & 0x3F));
    }
    *out = (char *)o;
}

static int hex4(const char *p, const char *end, uint32_t *out) {
    if (end - p < 4) return -1;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char h = p[i];
        v <<= 4;
        if (h >= '0' && h <= '9') v |= (uint32_t)(h - '0');
        else if (h >= 'a' && h <= 'f') v |= (uint32_t)(h - 'a' + 10);
        else if (h >= 'A' && h <= 'F') v |= (uint32_t)(h - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

/* Parses a JSON string at the cursor into a new NUL-terminated UTF-8 buffer; NULL on a syntax error. */
static char *json_string(json_cursor *c) {
    if (c->p >= c->end || *c->p != '"') return NULL;
    c->p++;
    char *buf = xmalloc((size_t)(c->end - c->p) + 1), *o = buf;
    while (c->p < c->end && *c->p != '"') {
        char ch = *c->p++;
        if (ch != '\\') { *o++ = ch; continue; }
        if (c->p >= c->end) break;
        char e = *c->p++;
        switch (e) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            uint32_t cp;
            if (hex4(c->p, c->end, &cp)) { free(buf); return NULL; }
            c->p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && c->end - c->p >= 6 && c->p[0] == '\\' && c->p[1] == 'u') {
                uint32_t lo;
                if (!hex4(c->p + 2, c->end, &lo) && lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    c->p += 6;
                }
            }
            put_utf8(&o, cp);
            break;
        }
        default: free(buf); return NULL;
        }
    }
    if (c->p >= c->end) { free(buf); return NULL; }
    c->p++; /* closing quote */
    *o = '\0';
    return buf;
}

/* Skips any JSON value (used for keys this program does not read); -1 on a syntax error. */
static int json_skip(json_cursor *c) {
    json_ws(c);
    if (c->p >= c->end) return -1;
    if (*c->p == '"') {
        char *s = json_string(c);
        if (!s) return -1;
        free(s);
        return 0;
    }
    if (*c->p == '{' || *c->p == '[') {
        int depth = 0;
        while (c->p < c->end) {
            if (*c->p == '"') {
                char *s = json_string(c);
                if (!s) return -1;
                free(s);
                continue;
            }
            if (*c->p == '{' || *c->p == '[') depth++;
            else if (*c->p == '}' || *c->p == ']') {
                if (--depth == 0) { c->p++; return 0; }
            }
            c->p++;
        }
        return -1;
    }
    while (c->p < c->end && *c->p != ',' && *c->p != '}' && *c->p != ']' && *c->p != ' ' && *c->p != '\n') c->p++;
    return 0;
}

typedef struct {
    char *id;       /* the id as JSON text (a quoted string or a number) */
    char *prompt;   /* the user message, UTF-8 */
} prompt_line;

/* Reads "id" and "prompt" of one JSON object line; returns 0, or -1 with a message in *err. */
static int parse_prompt_line(const char *line, size_t len, prompt_line *out, const char **err) {
    json_cursor c = {line, line + len};
    out->id = out->prompt = NULL;
    json_ws(&c);
    if (c.p >= c.end || *c.p != '{') { *err = "not a JSON object"; return -1; }
    c.p++;
    for (;;) {
        json_ws(&c);
        if (c.p < c.end && *c.p == '}') break;
        char *key = json_string(&c);
        if (!key) { *err = "bad key"; return -1; }
        json_ws(&c);
        if (c.p >= c.end || *c.p != ':') { free(key); *err = "expected ':'"; return -1; }
        c.p++;
        json_ws(&c);
        const char *value_start = c.p;
        if (!strcmp(key, "prompt")) {
            free(out->prompt);
            out->prompt = json_string(&c);
            if (!out->prompt) { free(key); *err = "\"prompt\" must be a string"; return -1; }
        } else if (!strcmp(key, "id")) {
            if (json_skip(&c)) { free(key); *err = "bad \"id\""; return -1; }
            size_t n = (size_t)(c.p - value_start);
            free(out->id);
            out->id = xmalloc(n + 1);
            memcpy(out->id, value_start, n);
            out->id[n] = '\0';
        } else if (json_skip(&c)) {
            free(key);
            *err = "bad value";
            return -1;
        }
        free(key);
        json_ws(&c);
        if (c.p < c.end && *c.p == ',') { c.p++; continue; }
        if (c.p < c.end && *c.p == '}') break;
        *err = "expected ',' or '}'";
        return -1;
    }
    if (!out->prompt) { *err = "no \"prompt\""; return -1; }
    if (!out->id) {
        out->id = xmalloc(5);
        memcpy(out->id, "null", 5);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Target features through cb_eval                                                                  */
/* ------------------------------------------------------------------------------------------------ */

/* The outputs of three decoder layers ("l_out-<layer>", the residual stream after the layer), one row
 * per batch token, appended across the micro-batches of one llama_decode. */
typedef struct {
    int layers[3];
    int n_embd;
    size_t rows_cap;
    float *rows[3];
    size_t filled[3];
    const char *error; /* set by the callback; checked after llama_decode */
} capture;

static void capture_reserve(capture *c, size_t rows) {
    if (rows <= c->rows_cap) return;
    for (int k = 0; k < 3; k++) c->rows[k] = xrealloc(c->rows[k], rows * (size_t)c->n_embd * sizeof(float));
    c->rows_cap = rows;
}

static void capture_reset(capture *c) {
    c->filled[0] = c->filled[1] = c->filled[2] = 0;
    c->error = NULL;
}

static int capture_slot(const capture *c, const char *name) {
    if (strncmp(name, "l_out-", 6) != 0) return -1;
    char *end;
    long layer = strtol(name + 6, &end, 10);
    if (*end) return -1;
    for (int k = 0; k < 3; k++)
        if (c->layers[k] == layer) return k;
    return -1;
}

static bool capture_callback(struct ggml_tensor *t, bool ask, void *user_data) {
    capture *c = user_data;
    int k = capture_slot(c, t->name);
    if (ask) return k >= 0;
    if (k < 0) return true;
    int64_t rows = t->ne[1];
    if (t->type != GGML_TYPE_F32 || t->ne[0] != c->n_embd || t->ne[2] != 1 || t->ne[3] != 1 ||
        ggml_nbytes(t) != (size_t)rows * (size_t)c->n_embd * sizeof(float)) {
        c->error = "a captured layer output is not a contiguous f32 [n_embd, n_tokens] tensor";
        return true;
    }
    if (c->filled[k] + (size_t)rows > c->rows_cap) {
        c->error = "more captured rows than the batch holds";
        return true;
    }
    ggml_backend_tensor_get(t, c->rows[k] + c->filled[k] * (size_t)c->n_embd, 0, ggml_nbytes(t));
    c->filled[k] += (size_t)rows;
    return true;
}

/* The drafter's feature row of batch row `row`: the three layer rows side by side. */
static void feature_row(const capture *c, size_t row, float *out) {
    for (int k = 0; k < 3; k++)
        memcpy(out + (size_t)k * (size_t)c->n_embd, c->rows[k] + row * (size_t)c->n_embd, (size_t)c->n_embd * sizeof(float));
}

/* ------------------------------------------------------------------------------------------------ */
/* The target: llama.cpp                                                                            */
/* ------------------------------------------------------------------------------------------------ */

typedef struct {
    struct llama_model *model;
    struct llama_context *ctx;
    const struct llama_vocab *vocab;
    llama_memory_t mem;
    int n_vocab, n_embd;
    struct llama_batch batch;
    capture cap;
} target;

/* The token embedding (token_embd.weight) dequantized to f32, row-major vocab x n_embd, through the gguf
 * C API and ggml's type traits: the drafter reads it (libspecblock borrows, never copies it). */
static float *load_embedding(const char *path, int n_vocab, int n_embd) {
    struct gguf_init_params gp = {true, NULL};
    struct gguf_context *g = gguf_init_from_file(path, gp);
    if (!g) die("%s: cannot read the GGUF header", path);
    int64_t id = gguf_find_tensor(g, "token_embd.weight");
    if (id < 0) die("%s: no token_embd.weight", path);
    enum ggml_type type = gguf_get_tensor_type(g, id);
    const struct ggml_type_traits *tr = ggml_get_type_traits(type);
    size_t n = (size_t)n_vocab * (size_t)n_embd;
    if (!tr->to_float && type != GGML_TYPE_F32) die("%s: token_embd.weight has type %s, which cannot be dequantized", path, ggml_type_name(type));
    if (gguf_get_tensor_size(g, id) != ggml_row_size(type, (int64_t)n)) die("%s: token_embd.weight is not %d x %d", path, n_vocab, n_embd);
    size_t bytes = gguf_get_tensor_size(g, id);
    size_t offset = gguf_get_data_offset(g) + gguf_get_tensor_offset(g, id);
    gguf_free(g);
    FILE *f = fopen(path, "rb");
    if (!f) die("%s: %s", path, strerror(errno));
    void *raw = xmalloc(bytes);
    if (fseek(f, (long)offset, SEEK_SET) || fread(raw, 1, bytes, f) != bytes) die("%s: cannot read token_embd.weight", path);
    fclose(f);
    float *out = xmalloc(n * sizeof(float));
    if (type == GGML_TYPE_F32) memcpy(out, raw, n * sizeof(float));
    else tr->to_float(raw, out, (int64_t)n);
    free(raw);
    return out;
}

/* The target layers whose outputs make the drafter's features: the drafter's config.json names
 * them (aux_layer_ids; else the EAGLE-3 default [1, L/2 - 1, L - 4], [1, 14, 26] for SmolLM2-135M). */
static void target_use_drafter_layers(target *t, const sb_drafter *drafter) {
    uint32_t layers[SB_AUX_LAYERS];
    check_sb(sb_drafter_get_aux_layers(drafter, (uint32_t)llama_model_n_layer(t->model), layers, SB_AUX_LAYERS),
             "sb_drafter_get_aux_layers");
    for (int k = 0; k < 3; k++) t->cap.layers[k] = (int)layers[k];
}

static void target_open(target *t, const options *o) {
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    t->model = llama_model_load_from_file(o->model, mp);
    if (!t->model) die("%s: llama_model_load_from_file failed", o->model);
    t->vocab = llama_model_get_vocab(t->model);
    t->n_vocab = llama_vocab_n_tokens(t->vocab);
    t->n_embd = llama_model_n_embd(t->model);
    /* Which layers to capture comes from the drafter (target_use_drafter_layers), loaded after the
     * model because it borrows the model's embedding; until then nothing is captured. */
    for (int k = 0; k < 3; k++) t->cap.layers[k] = -1;
    t->cap.n_embd = t->n_embd;

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = N_CTX;
    cp.n_batch = N_BATCH;
    cp.n_ubatch = N_BATCH;
    cp.n_seq_max = N_SEQ_MAX;
    /* --exact: llama.cpp on one thread. With two or more, a one-token decode over 512 or more cells
     * splits attention over the KV range per thread and merges the partial sums (ggml's split-KV path),
     * while a tree batch attends over the whole range in one pass: the sums differ in rounding, so tree
     * rows and plain decoding drift apart (up to ~1.3 in logits, --check-logits). With one thread both
     * paths sum in the same order: bit-identical logits, measured. The drafter keeps --threads. */
    int target_threads = o->exact ? 1 : o->threads;
    cp.n_threads = target_threads;
    cp.n_threads_batch = target_threads;
    cp.kv_unified = true; /* tokens shared by several leaf sequences are one cell */
    cp.cb_eval = capture_callback;
    cp.cb_eval_user_data = &t->cap;
    cp.no_perf = true;
    cp.flash_attn_type = o->flash_attn;
    t->ctx = llama_init_from_model(t->model, cp);
    if (!t->ctx) die("llama_init_from_model failed");
    t->mem = llama_get_memory(t->ctx);
    t->batch = llama_batch_init(N_BATCH, 0, N_SEQ_MAX);
    capture_reserve(&t->cap, N_BATCH);
}

static void target_close(target *t) {
    llama_batch_free(t->batch);
    for (int k = 0; k < 3; k++) free(t->cap.rows[k]);
    llama_free(t->ctx);
    llama_model_free(t->model);
    llama_backend_free();
}

static void batch_clear(struct llama_batch *b) { b->n_tokens = 0; }

static void batch_add(struct llama_batch *b, llama_token tok, llama_pos pos, const llama_seq_id *seqs, int n_seqs, bool logits) {
    int i = b->n_tokens++;
    b->token[i] = tok;
    b->pos[i] = pos;
    b->n_seq_id[i] = n_seqs;
    for (int s = 0; s < n_seqs; s++) b->seq_id[i][s] = seqs[s];
    b->logits[i] = logits;
}

static void decode(target *t) {
    capture_reset(&t->cap);
    int rc = llama_decode(t->ctx, t->batch);
    if (rc != 0) die("llama_decode failed (%d)", rc);
    if (t->cap.error) die("feature capture: %s", t->cap.error);
}

/* The prompt into sequence 0 from position 0, in batches; logits for the last token only. With `capture`
 * every prompt row's features are kept (the capture buffers grow to the prompt). */
static void prefill(target *t, const token_list *prompt, bool keep_features, float *features) {
    static const llama_seq_id seq0 = 0;
    size_t fw = 3 * (size_t)t->n_embd;
    for (size_t start = 0; start < prompt->len; start += N_BATCH) {
        size_t end = start + N_BATCH < prompt->len ? start + N_BATCH : prompt->len;
        batch_clear(&t->batch);
        for (size_t i = start; i < end; i++) batch_add(&t->batch, prompt->ids[i], (llama_pos)i, &seq0, 1, i + 1 == prompt->len);
        decode(t);
        if (keep_features) {
            for (int k = 0; k < 3; k++)
                if (t->cap.filled[k] != end - start) die("feature capture: layer %d gave %zu rows for %zu tokens", t->cap.layers[k], t->cap.filled[k], end - start);
            for (size_t i = start; i < end; i++) feature_row(&t->cap, i - start, features + i * fw);
        }
    }
}

/* Argmax (ties to the lower id) and the gap between the two largest logits. */
static int32_t argmax_row(const float *logits, int n, float *gap) {
    int32_t best = 0;
    float b1 = -INFINITY, b2 = -INFINITY;
    for (int v = 0; v < n; v++) {
        float x = logits[v];
        if (x > b1) { b2 = b1; b1 = x; best = v; }
        else if (x > b2) b2 = x;
    }
    if (gap) *gap = b1 - b2;
    return best;
}

/* The serialized size of sequence 0, to check that it holds exactly one cell per committed position:
 * the size grows by the same number of bytes for every cell, which the first step that commits a token
 * measures and every later step checks. */
typedef struct {
    llama_pos base_pos;
    size_t base_bytes, cell_bytes;
} kv_size_check;

/* Sequence 0 holds exactly the committed prefix [0, committed) and every other sequence but the trash is
 * empty. */
static void check_kv(const target *t, llama_pos committed, kv_size_check *sz, const char *when) {
    llama_pos lo = llama_memory_seq_pos_min(t->mem, 0), hi = llama_memory_seq_pos_max(t->mem, 0);
    if (lo != 0 || hi != committed - 1) die("KV check (%s): sequence 0 holds positions [%d, %d], expected [0, %d]", when, lo, hi, committed - 1);
    size_t bytes = llama_state_seq_get_size(t->ctx, 0);
    if (!sz->base_bytes) {
        sz->base_pos = committed;
        sz->base_bytes = bytes;
    } else if (committed > sz->base_pos) {
        size_t grown = bytes - sz->base_bytes, cells = (size_t)(committed - sz->base_pos);
        if (!sz->cell_bytes && grown % cells == 0) sz->cell_bytes = grown / cells;
        if (!sz->cell_bytes || grown != cells * sz->cell_bytes)
            die("KV check (%s): sequence 0 grew by %zu bytes for %zu committed cells (%zu bytes per cell)", when, grown, cells, sz->cell_bytes);
    }
    for (llama_seq_id s = 1; s < TRASH_SEQ; s++)
        if (llama_memory_seq_pos_max(t->mem, s) != -1) die("KV check (%s): sequence %d is not empty (up to position %d)", when, s, llama_memory_seq_pos_max(t->mem, s));
}

/* ------------------------------------------------------------------------------------------------ */
/* Plain and speculative decoding                                                                   */
/* ------------------------------------------------------------------------------------------------ */

typedef struct {
    token_list ids;
    float *gaps; /* plain only: top-2 logit gap where each token was chosen */
    double seconds, draft_seconds, verify_seconds, forward_seconds, check_seconds;
    float max_logit_diff; /* --check-logits: largest |tree - sequential| logit */
    size_t trash_cells;   /* rejected cells kept allocated (keep_accepted_path) */
    uint64_t iterations, emitted;
} run_result;

static bool is_stop(const target *t, int32_t tok) { return llama_vocab_is_eog(t->vocab, tok); }

static void plain_decode(target *t, const options *o, const token_list *prompt, run_result *r) {
    static const llama_seq_id seq0 = 0;
    llama_memory_clear(t->mem, true);
    prefill(t, prompt, false, NULL);
    sb_sampling sampling = sb_sampling_default_params();
    sampling.temperature = o->temperature;
    r->gaps = xmalloc((size_t)o->max_new * sizeof(float));
    double t0 = now_seconds();
    llama_pos pos = (llama_pos)prompt->len;
    for (int n = 0; n < o->max_new; n++) {
        const float *logits = llama_get_logits_ith(t->ctx, -1);
        int32_t tok = argmax_row(logits, t->n_vocab, &r->gaps[n]);
        if (o->temperature > 0.0f) check_sb(sb_sampling_sample_token(logits, (uint32_t)t->n_vocab, &sampling, o->seed, (uint64_t)n, &tok), "sb_sampling_sample_token");
        push_token(&r->ids, tok);
        if (is_stop(t, tok) || n + 1 == o->max_new) break;
        batch_clear(&t->batch);
        batch_add(&t->batch, tok, pos++, &seq0, 1, true);
        decode(t);
    }
    r->seconds = now_seconds() - t0;
}

/* KV clean-up after verification. The accepted path lives in the sequence of any leaf below its last
 * node (`best`): its cells up to the bonus position are copied to sequence 0, and every leaf sequence is
 * then removed. The cells of rejected tokens are not freed but moved to the trash sequence: measured with
 * this llama.cpp, a tree decoded into cells freed by an earlier rejection (find_slot reuses holes below
 * used cells) gives logits up to 0.7 away from plain decoding's (--check-logits shows it), while cells
 * kept allocated give bit-identical logits. The trash grows by the rejected rows of each step; it is
 * cleared with the rest of the cache at the next sequence. */
static void keep_accepted_path(target *t, const sb_accept *acc, const int32_t *seq_first, uint32_t leaves, llama_pos committed) {
    llama_pos kept_end = committed + (llama_pos)acc->n_accepted + 1;
    int32_t last_node = acc->n_accepted ? acc->nodes[acc->n_accepted - 1] : 0;
    llama_seq_id best = seq_first[last_node];
    for (uint32_t k = 0; k < leaves; k++) {
        llama_seq_id s = (llama_seq_id)(k + 1);
        if (s == best) continue;
        llama_memory_seq_cp(t->mem, s, TRASH_SEQ, committed + 1, -1);
        llama_memory_seq_rm(t->mem, s, -1, -1);
    }
    llama_memory_seq_cp(t->mem, best, TRASH_SEQ, kept_end, -1);
    if (!llama_memory_seq_rm(t->mem, best, kept_end, -1)) die("llama_memory_seq_rm(%d) failed", best);
    llama_memory_seq_cp(t->mem, best, 0, committed, kept_end);
    llama_memory_seq_rm(t->mem, best, -1, -1);
}

/* --check-logits: the accepted path (root, accepted tokens) decoded again one token at a time in a
 * scratch sequence holding the committed prefix, and its logits compared with the tree rows'. Records the
 * largest absolute difference; the scratch cells go to the trash (see keep_accepted_path). */
static void check_path_logits(target *t, const sb_accept *acc, int32_t root, llama_pos committed, run_result *r) {
    size_t v = (size_t)t->n_vocab;
    float *tree_logits = xmalloc((size_t)(acc->n_accepted + 1) * v * sizeof(float));
    for (uint32_t j = 0; j <= acc->n_accepted; j++)
        memcpy(tree_logits + j * v, llama_get_logits_ith(t->ctx, j == 0 ? 0 : acc->nodes[j - 1]), v * sizeof(float));
    static const llama_seq_id scratch = SCRATCH_SEQ;
    llama_memory_seq_cp(t->mem, 0, scratch, -1, -1);
    for (uint32_t j = 0; j <= acc->n_accepted; j++) {
        batch_clear(&t->batch);
        batch_add(&t->batch, j == 0 ? root : acc->tokens[j - 1], committed + (llama_pos)j, &scratch, 1, true);
        decode(t);
        const float *seq_logits = llama_get_logits_ith(t->ctx, -1);
        for (size_t x = 0; x < v; x++) {
            float d = fabsf(seq_logits[x] - tree_logits[j * v + x]);
            if (d > r->max_logit_diff) r->max_logit_diff = d;
        }
    }
    llama_memory_seq_cp(t->mem, scratch, TRASH_SEQ, committed, -1);
    llama_memory_seq_rm(t->mem, scratch, -1, -1);
    free(tree_logits);
}

/* One drafter session per run: prefill, then draft / verify on llama.cpp / commit / feedback. */
static void spec_decode(target *t, const options *o, sb_session *session, const token_list *prompt, run_result *r) {
    size_t fw = 3 * (size_t)t->n_embd;
    size_t n_prompt = prompt->len;
    llama_memory_clear(t->mem, true);
    capture_reserve(&t->cap, N_BATCH);
    float *features = xmalloc((n_prompt + 1) * fw * sizeof(float));
    prefill(t, prompt, true, features);
    kv_size_check kv_size = {0, 0, 0};
    check_kv(t, (llama_pos)n_prompt, &kv_size, "after the prompt");

    sb_sampling sampling = sb_sampling_default_params();
    sampling.temperature = o->temperature;
    const float *last = llama_get_logits_ith(t->ctx, -1);
    int32_t first = argmax_row(last, t->n_vocab, NULL);
    if (o->temperature > 0.0f) check_sb(sb_sampling_sample_token(last, (uint32_t)t->n_vocab, &sampling, o->seed, 0, &first), "sb_sampling_sample_token");

    double t0 = now_seconds();
    int32_t *toks = xmalloc((n_prompt + 1) * sizeof(int32_t));
    memcpy(toks, prompt->ids, n_prompt * sizeof(int32_t));
    toks[n_prompt] = first;
    check_sb(sb_session_prefill(session, features, (uint32_t)n_prompt, toks, (uint32_t)(n_prompt + 1)), "sb_session_prefill");
    free(toks);
    free(features);
    push_token(&r->ids, first);
    bool done = is_stop(t, first) || o->max_new == 1;

    sb_tree_params tp;
    check_sb(sb_session_get_tree_params(session, &tp), "sb_session_get_tree_params");
    sb_tree *tree = NULL;
    check_sb(sb_tree_new(&tp, &tree), "sb_tree_new");
    size_t cap = tp.max_nodes + 1;
    int32_t *node_tok = xmalloc(cap * sizeof(int32_t)), *depth = xmalloc(cap * sizeof(int32_t));
    int32_t *seq_first = xmalloc(cap * sizeof(int32_t)), *seq_count = xmalloc(cap * sizeof(int32_t));
    int32_t *argmax = xmalloc(cap * sizeof(int32_t));
    float *logits = o->temperature > 0.0f ? xmalloc(cap * (size_t)t->n_vocab * sizeof(float)) : NULL;
    float *commit_features = xmalloc((SB_MAX_KEEP + 1) * fw * sizeof(float));
    llama_seq_id seqs[MAX_LEAF_SEQS];
    llama_pos committed = (llama_pos)n_prompt; /* tokens in the KV cache; the root is the next one */

    while (!done) {
        double d0 = now_seconds();
        check_sb(sb_session_draft(session, tree), "sb_session_draft");
        double draft_s = now_seconds() - d0;
        double v0 = now_seconds();
        uint32_t n = sb_tree_len(tree);
        if (n > N_BATCH) die("a draft tree of %u nodes exceeds the batch (%d)", n, N_BATCH);
        /* From 64 query rows ggml's flash attention switches to its tiled kernel, another summation order. */
        if (o->exact && n >= 64) die("--exact: a draft tree of %u nodes; exact mode needs trees under 64 rows (--budget <= 62)", n);
        check_sb(sb_tree_tokens(tree, node_tok, n), "sb_tree_tokens");
        check_sb(sb_tree_depths(tree, depth, n), "sb_tree_depths");
        uint32_t leaves = sb_tree_num_leaves(tree);
        batch_clear(&t->batch);
        if (n == 1) {
            /* A plain step (the policy chose not to draft): the root alone, in sequence 0. */
            llama_seq_id s0 = 0;
            batch_add(&t->batch, node_tok[0], committed, &s0, 1, true);
        } else {
            check_sb(sb_tree_seq_ranges(tree, 1, MAX_LEAF_SEQS + 1, seq_first, seq_count, n), "sb_tree_seq_ranges");
            for (uint32_t k = 0; k < leaves; k++) llama_memory_seq_cp(t->mem, 0, (llama_seq_id)(k + 1), -1, -1);
            for (uint32_t i = 0; i < n; i++) {
                for (int32_t s = 0; s < seq_count[i]; s++) seqs[s] = seq_first[i] + s;
                batch_add(&t->batch, node_tok[i], committed + depth[i], seqs, seq_count[i], true);
            }
        }
        /* Cells in use: the committed text, the trash, this tree and (--check-logits) the scratch path. */
        if ((size_t)committed + r->trash_cells + 2 * (size_t)n > N_CTX)
            die("the KV cache (%d cells) is full: %d committed and %zu rejected cells; lower --max-new", N_CTX, committed, r->trash_cells);
        double f0 = now_seconds();
        decode(t);
        r->forward_seconds += now_seconds() - f0;
        for (int k = 0; k < 3; k++)
            if (t->cap.filled[k] != n) die("feature capture: layer %d gave %zu rows for %u tree rows", t->cap.layers[k], t->cap.filled[k], n);
        sb_accept acc;
        if (o->temperature > 0.0f) {
            for (uint32_t i = 0; i < n; i++) memcpy(logits + (size_t)i * (size_t)t->n_vocab, llama_get_logits_ith(t->ctx, (int32_t)i), (size_t)t->n_vocab * sizeof(float));
            check_sb(sb_verify_sample(tree, logits, n, (uint32_t)t->n_vocab, &sampling, o->seed + 1 + r->iterations, &acc), "sb_verify_sample");
        } else {
            for (uint32_t i = 0; i < n; i++) argmax[i] = argmax_row(llama_get_logits_ith(t->ctx, (int32_t)i), t->n_vocab, NULL);
            check_sb(sb_verify_greedy(tree, argmax, n, &acc), "sb_verify_greedy");
        }
        if (o->check_logits && n > 1) {
            check_path_logits(t, &acc, node_tok[0], committed, r);
            r->trash_cells += acc.n_accepted + 1;
        }
        llama_pos kept_end = committed + (llama_pos)acc.n_accepted + 1;
        if (n > 1) {
            keep_accepted_path(t, &acc, seq_first, leaves, committed);
            r->trash_cells += n - acc.n_accepted - 1;
        }
        double verify_s = now_seconds() - v0;
        committed = kept_end;
        /* The checks are not part of decoding: their time is left out of the speed. */
        double k0 = now_seconds();
        check_kv(t, committed, &kv_size, "after verification");
        r->check_seconds += now_seconds() - k0;

        /* Emit the accepted tokens and the bonus token. */
        r->iterations++;
        r->emitted += acc.n_accepted + 1;
        for (uint32_t j = 0; j <= acc.n_accepted && !done; j++) {
            int32_t tok = j < acc.n_accepted ? acc.tokens[j] : acc.bonus_token;
            push_token(&r->ids, tok);
            done = is_stop(t, tok) || r->ids.len >= (size_t)o->max_new;
        }
        double c0 = now_seconds();
        if (!done) {
            for (uint32_t j = 0; j < acc.n_keep; j++) feature_row(&t->cap, (size_t)acc.keep[j], commit_features + (size_t)j * fw);
            check_sb(sb_session_commit(session, acc.tokens, acc.n_accepted, acc.bonus_token, commit_features, acc.n_accepted + 1), "sb_session_commit");
        }
        draft_s += now_seconds() - c0;
        r->draft_seconds += draft_s;
        r->verify_seconds += verify_s;
        sb_feedback fb = {(uint32_t)sizeof(sb_feedback), n, acc.n_accepted + 1, SB_FEEDBACK_DRAFT_MEASURED, verify_s, draft_s};
        check_sb(sb_session_feedback(session, &fb), "sb_session_feedback");
    }
    r->seconds = now_seconds() - t0 - r->check_seconds;
    if (r->ids.len > (size_t)o->max_new) r->ids.len = (size_t)o->max_new;
    free(node_tok);
    free(depth);
    free(seq_first);
    free(seq_count);
    free(argmax);
    free(logits);
    free(commit_features);
    sb_tree_free(tree);
}

/* ------------------------------------------------------------------------------------------------ */
/* Main                                                                                             */
/* ------------------------------------------------------------------------------------------------ */

static void print_ids(const char *key, const token_list *l) {
    printf("\"%s\":[", key);
    for (size_t i = 0; i < l->len; i++) printf(i ? ",%d" : "%d", l->ids[i]);
    printf("]");
}

static token_list tokenize_chat(const target *t, const char *user) {
    struct llama_chat_message msg = {"user", user};
    const char *tmpl = llama_model_chat_template(t->model, NULL);
    int32_t cap = (int32_t)(2 * strlen(user) + 256);
    char *text = xmalloc((size_t)cap);
    int32_t len = llama_chat_apply_template(tmpl, &msg, 1, true, text, cap);
    if (len < 0) die("llama_chat_apply_template failed (the model's template is not one llama.cpp knows)");
    if (len >= cap) {
        cap = len + 1;
        text = xrealloc(text, (size_t)cap);
        len = llama_chat_apply_template(tmpl, &msg, 1, true, text, cap);
    }
    token_list l = {NULL, 0, 0};
    int32_t n = -llama_tokenize(t->vocab, text, len, NULL, 0, true, true);
    if (n <= 0) die("llama_tokenize failed");
    l.ids = xmalloc((size_t)n * sizeof(int32_t));
    l.cap = (size_t)n;
    if (llama_tokenize(t->vocab, text, len, l.ids, n, true, true) != n) die("llama_tokenize failed");
    l.len = (size_t)n;
    free(text);
    return l;
}

int main(int argc, char **argv) {
    options o = parse_options(argc, argv);
    target t;
    memset(&t, 0, sizeof t);
    llama_log_set(NULL, NULL);
    target_open(&t, &o);
    if (!o.json) fprintf(stderr, "target %s: %d layers, width %d, vocabulary %d; features from layers %d, %d, %d\n", o.model, llama_model_n_layer(t.model), t.n_embd, t.n_vocab, t.cap.layers[0], t.cap.layers[1], t.cap.layers[2]);

    float *embedding = load_embedding(o.model, t.n_vocab, t.n_embd);
    sb_drafter_params dp = sb_drafter_default_params();
    dp.threads = (uint32_t)o.threads;
    sb_drafter *drafter = NULL;
    char err[512];
    sb_status s = sb_drafter_load(o.drafter, &dp, embedding, (uint64_t)t.n_vocab * (uint64_t)t.n_embd, &drafter, err, sizeof err);
    if (s != SB_STATUS_OK) die("sb_drafter_load(%s): %s: %s", o.drafter, sb_status_str((int32_t)s), err);
    sb_drafter_info info;
    check_sb(sb_drafter_get_info(drafter, &info), "sb_drafter_get_info");
    if (info.feature_width != 3u * (uint32_t)t.n_embd || info.vocab != (uint32_t)t.n_vocab)
        die("the drafter (features %u, vocabulary %u) does not fit the target (features %d, vocabulary %d)", info.feature_width, info.vocab, 3 * t.n_embd, t.n_vocab);
    target_use_drafter_layers(&t, drafter);

    sb_session_params sp = sb_session_default_params();
    sp.max_entries = 4096;
    if (o.budget > 0) {
        sp.policy = SB_POLICY_FIXED;
        sp.budget = (uint32_t)o.budget;
        sp.max_seeds = o.max_seeds;
        sp.eagle_depth = o.eagle_depth;
        sp.eagle_top_k = o.eagle_topk;
    }
    /* One session for every prompt: the adaptive policy keeps what it learned. */
    sb_session *session = NULL;
    check_sb(sb_session_new(drafter, &sp, &session), "sb_session_new");

    FILE *f = fopen(o.prompt_file, "r");
    if (!f) die("%s: %s", o.prompt_file, strerror(errno));
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t line_len;
    int line_no = 0;
    double plain_s = 0, spec_s = 0;
    uint64_t plain_n = 0, spec_n = 0;
    while ((line_len = getline(&line, &line_cap, f)) != -1) {
        line_no++;
        if (strspn(line, " \t\r\n") == (size_t)line_len) continue;
        prompt_line pl;
        const char *why = NULL;
        if (parse_prompt_line(line, (size_t)line_len, &pl, &why)) die("%s:%d: %s", o.prompt_file, line_no, why);
        token_list prompt = tokenize_chat(&t, pl.prompt);
        if (prompt.len + (size_t)o.max_new > 4096) die("%s:%d: the prompt (%zu tokens) and --max-new %d exceed the session's 4096 entries", o.prompt_file, line_no, prompt.len, o.max_new);

        run_result plain = {0}, spec = {0};
        plain_decode(&t, &o, &prompt, &plain);
        spec_decode(&t, &o, session, &prompt, &spec);

        bool identical = plain.ids.len == spec.ids.len && !memcmp(plain.ids.ids, spec.ids.ids, plain.ids.len * sizeof(int32_t));
        size_t first_diff = 0;
        while (first_diff < plain.ids.len && first_diff < spec.ids.len && plain.ids.ids[first_diff] == spec.ids.ids[first_diff]) first_diff++;
        double plain_tps = plain.ids.len > 1 ? (double)(plain.ids.len - 1) / plain.seconds : 0.0;
        double spec_tps = spec.ids.len > 1 ? (double)(spec.ids.len - 1) / spec.seconds : 0.0;
        double mal = spec.iterations ? (double)spec.emitted / (double)spec.iterations : 0.0;
        plain_s += plain.seconds;
        spec_s += spec.seconds;
        plain_n += plain.ids.len > 1 ? plain.ids.len - 1 : 0;
        spec_n += spec.ids.len > 1 ? spec.ids.len - 1 : 0;
        if (o.json) {
            printf("{\"id\":%s,\"prompt_tokens\":%zu,", pl.id, prompt.len);
            print_ids("plain_ids", &plain.ids);
            printf(",");
            print_ids("spec_ids", &spec.ids);
            printf(",\"identical\":%s,\"plain_tokens_per_second\":%.3f,\"spec_tokens_per_second\":%.3f,"
                   "\"mean_accept_length\":%.4f,\"iterations\":%llu,\"draft_seconds\":%.4f,\"verify_seconds\":%.4f,"
                   "\"check_seconds\":%.4f",
                   identical ? "true" : "false", plain_tps, spec_tps, mal, (unsigned long long)spec.iterations,
                   spec.draft_seconds, spec.verify_seconds, spec.check_seconds);
            if (o.check_logits) printf(",\"max_logit_diff\":%.6g", (double)spec.max_logit_diff);
            if (!identical) {
                printf(",\"first_diff\":%zu", first_diff);
                if (first_diff < plain.ids.len) printf(",\"plain_top2_gap\":%.6g", (double)plain.gaps[first_diff]);
            }
            printf("}\n");
        } else {
            printf("%s: %zu prompt tokens; plain %zu tokens at %.1f tok/s; speculative %zu tokens at %.1f tok/s, "
                   "%llu iterations (draft %.3f s, verify %.3f s of which the forward %.3f s), mean accept length %.2f; %s\n",
                   pl.id, prompt.len, plain.ids.len, plain_tps, spec.ids.len, spec_tps,
                   (unsigned long long)spec.iterations, spec.draft_seconds, spec.verify_seconds, spec.forward_seconds, mal,
                   identical ? "identical" : "DIFFERENT");
        }
        fflush(stdout);
        free(plain.ids.ids);
        free(plain.gaps);
        free(spec.ids.ids);
        free(prompt.ids);
        free(pl.id);
        free(pl.prompt);
    }
    free(line);
    fclose(f);
    if (!o.json)
        fprintf(stderr, "all prompts: plain %.1f tok/s, speculative %.1f tok/s (%.3fx)\n", plain_n / (plain_s > 0 ? plain_s : 1),
                spec_n / (spec_s > 0 ? spec_s : 1), plain_s > 0 && spec_s > 0 ? (spec_n / spec_s) / (plain_n / plain_s) : 0.0);
    sb_session_free(session);
    sb_drafter_free(drafter);
    free(embedding);
    target_close(&t);
    return 0;
}
