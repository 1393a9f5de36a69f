/*
 * The tiny check framework of the C tests (tests/c/test_api.c, tests/c/test_session.c): each check counts
 * a pass or prints file:line and the failing expression; a program ends with "N passed, M failed".
 * Include it once, after specblock.h and <stdio.h>.
 */

#ifndef SPECBLOCK_TEST_CHECK_H
#define SPECBLOCK_TEST_CHECK_H

static int g_passed;
static int g_failed;

static void check_impl(int ok, const char *file, int line, const char *what) {
    if (ok) {
        g_passed++;
    } else {
        g_failed++;
        fprintf(stderr, "%s:%d: CHECK failed: %s\n", file, line, what);
    }
}

#define CHECK(cond) check_impl((cond) ? 1 : 0, __FILE__, __LINE__, #cond)
/* A check inside a helper, reported at the caller's line. */
#define CHECK_AT(cond, line) check_impl((cond) ? 1 : 0, __FILE__, (line), #cond)

static void check_status_impl(sb_status got, sb_status want, const char *file, int line,
                              const char *call) {
    if (got == want) {
        g_passed++;
    } else {
        g_failed++;
        fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d (%s)\n", file, line, call, (int)got,
                sb_status_str((int32_t)got), (int)want, sb_status_str((int32_t)want));
    }
}

#define CHECK_STATUS(call, want) check_status_impl((call), (want), __FILE__, __LINE__, #call)
#define CHECK_STATUS_AT(call, want, line) check_status_impl((call), (want), __FILE__, (line), #call)
#define CHECK_OK(call) CHECK_STATUS(call, SB_STATUS_OK)

static void check_eq_impl(long long got, long long want, const char *file, int line,
                          const char *expr) {
    if (got == want) {
        g_passed++;
    } else {
        g_failed++;
        fprintf(stderr, "%s:%d: %s == %lld, expected %lld\n", file, line, expr, got, want);
    }
}

#define CHECK_EQ(got, want) check_eq_impl((long long)(got), (long long)(want), __FILE__, __LINE__, #got)

#endif /* SPECBLOCK_TEST_CHECK_H */
