/* The open-loop sender of the latency benchmarks, in C: the same schedule and
 * output as bench/latency_sender.py's process sender (sender_main), at a
 * fraction of its CPU per request, so that the stand-in for a service's
 * clients takes less of the cores the service runs on.
 *
 * Usage: latency_sender FD T0 INTERVAL N OUT
 *   FD        a connected stream socket (inherited): one byte per request
 *   T0        the first due time, seconds on CLOCK_MONOTONIC
 *   INTERVAL  seconds between requests
 *   N         requests
 *   OUT       file written when done: N int64 send times (monotonic ns, the
 *             time each request was handed over), then six int64s: CPU used
 *             (ns), time waited runnable for a CPU (ns, schedstat), voluntary
 *             and involuntary context switches, writes made, sleeps asked for
 *             (bench/latency_sender.py's SENDER_STATS, in that order), all
 *             over the schedule only.
 *
 * Request k is due at T0 + k * INTERVAL. The sender sleeps until the next
 * request is due (absolute, timer slack 1 us), then writes one byte for each
 * request due by then, in one write. Exit status 0 when every byte was
 * written, 2 on bad arguments, 1 on an I/O error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t schedstat_wait_ns(void) {
    FILE *f = fopen("/proc/self/schedstat", "r");
    unsigned long long run = 0, wait = 0;
    if (f == NULL)
        return 0;
    if (fscanf(f, "%llu %llu", &run, &wait) != 2)
        wait = 0;
    fclose(f);
    return (int64_t)wait;
}

static void usage(int64_t out[4]) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    out[0] = ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000
             + ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
    out[1] = schedstat_wait_ns();
    out[2] = ru.ru_nvcsw;
    out[3] = ru.ru_nivcsw;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s FD T0 INTERVAL N OUT\n", argv[0]);
        return 2;
    }
    char *end;
    long fd = strtol(argv[1], &end, 10);
    double t0 = strtod(argv[2], &end), interval = strtod(argv[3], &end);
    long long n = strtoll(argv[4], &end, 10);
    if (fd < 0 || !(interval > 0) || n <= 0 || n > (1LL << 30)) {
        fprintf(stderr, "latency_sender: bad FD, INTERVAL or N\n");
        return 2;
    }
    int64_t *sent = calloc((size_t)n, sizeof *sent);
    static char zeros[65536];
    if (sent == NULL)
        return 1;
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    int64_t t0_ns = (int64_t)(t0 * 1e9);
    int64_t before[4], after[4], writes = 0, sleeps = 0;
    usage(before);
    long long i = 0;
    while (i < n) {
        int64_t due = t0_ns + (int64_t)((double)i * interval * 1e9);
        int64_t now = now_ns();
        if (due > now) {
            struct timespec ts = {due / 1000000000, due % 1000000000};
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                ;
            sleeps++;
            now = now_ns();
        }
        long long j = i + 1;
        while (j < n && t0_ns + (int64_t)((double)j * interval * 1e9) <= now)
            j++;
        for (long long k = i; k < j; k++)
            sent[k] = now; /* before the write: the reader may see it first */
        for (long long left = j - i; left > 0;) {
            size_t chunk = left < (long long)sizeof zeros ? (size_t)left : sizeof zeros;
            if (write_all((int)fd, zeros, chunk) < 0) {
                perror("latency_sender: write");
                return 1;
            }
            left -= (long long)chunk;
        }
        writes++;
        i = j;
    }
    usage(after);
    close((int)fd);
    FILE *f = fopen(argv[5], "wb");
    if (f == NULL) {
        perror("latency_sender: open OUT");
        return 1;
    }
    int64_t stats[6] = {after[0] - before[0], after[1] - before[1], after[2] - before[2],
                        after[3] - before[3], writes, sleeps};
    if (fwrite(sent, sizeof *sent, (size_t)n, f) != (size_t)n || fwrite(stats, sizeof *stats, 6, f) != 6) {
        perror("latency_sender: write OUT");
        fclose(f);
        return 1;
    }
    return fclose(f) == 0 ? 0 : 1;
}
