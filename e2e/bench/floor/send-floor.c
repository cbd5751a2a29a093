// The kernel's floor for fan-out on this machine: one process writes a
// 30-byte message to N loopback TCP sockets every 20 ms for 250 rounds, with
// one send(2) per socket or with the sends submitted to io_uring in batches
// (as Tandem's room does); forked receivers read them with epoll, like the
// benchmark's observers. Prints the sender's CPU per send.
//
//   apt-get install liburing-dev
//   gcc -O2 -o /tmp/send-floor send-floor.c -luring
//   /tmp/send-floor N RECEIVERS MODE [BATCH [PERIOD_MS [PER_ROUND [ROUNDS]]]]
//   MODE 0: send(2), 1: io_uring; defaults: BATCH N, PERIOD_MS 20, PER_ROUND N, ROUNDS 250
//   e.g. /tmp/send-floor 1000 4 0; /tmp/send-floor 1000 4 1
// PER_ROUND below N sends each round to the next PER_ROUND sockets in turn, as a
// keepalive does: `/tmp/send-floor 18000 2 1 333 50 333 400` is the keepalive traffic
// of 100,000 idle connections at the default 15 s (333 sockets every 50 ms step).
// RECEIVERS 0: no forked receivers; it prints "listening PORT" and waits for N
// connections from outside (the benchmark's Node load generators, see lib/floor.mjs).
#define _GNU_SOURCE
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

// CPU time of the calling thread, in ns (the sender is single-threaded).
static long long cpu_ns(void) {
  long long ns = 0;
  FILE *f = fopen("/proc/self/schedstat", "r");
  if (f && fscanf(f, "%lld", &ns) != 1) ns = 0;
  if (f) fclose(f);
  return ns;
}

static void receive(struct sockaddr_in *addr, int count) {
  int ep = epoll_create1(0);
  for (int i = 0; i < count; i++) {
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (void *)addr, sizeof *addr)) { perror("connect"); exit(1); }
    struct epoll_event e = {.events = EPOLLIN, .data.fd = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
  }
  struct epoll_event ev[256];
  char buf[4096];
  for (;;) {
    int k = epoll_wait(ep, ev, 256, 3000);
    if (k <= 0) exit(0);
    for (int i = 0; i < k; i++)
      if (read(ev[i].data.fd, buf, sizeof buf) <= 0) exit(0);
  }
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s N RECEIVERS MODE [BATCH [PERIOD_MS [PER_ROUND [ROUNDS]]]]\n", argv[0]);
    return 2;
  }
  int n = atoi(argv[1]), receivers = atoi(argv[2]), uring = atoi(argv[3]);
  int batch = argc > 4 ? atoi(argv[4]) : n;
  double period = (argc > 5 ? atoi(argv[5]) : 20) / 1e3;
  int per_round = argc > 6 ? atoi(argv[6]) : n;
  const int rounds = argc > 7 ? atoi(argv[7]) : 250;
  if (n <= 0 || batch <= 0 || period <= 0 || per_round <= 0 || rounds <= 0 || batch > 4096) {
    fprintf(stderr, "N, BATCH (at most 4096), PERIOD_MS, PER_ROUND and ROUNDS must be positive\n");
    return 2;
  }
  int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
  socklen_t al = sizeof a;
  if (bind(ls, (void *)&a, sizeof a) || listen(ls, 4096) || getsockname(ls, (void *)&a, &al)) {
    perror("listen");
    return 1;
  }
  if (receivers == 0) {
    printf("listening %d\n", ntohs(a.sin_port));
    fflush(stdout);
  }
  for (int p = 0; p < receivers; p++)
    if (fork() == 0) receive(&a, n / receivers);
  if (receivers > 0) n = n / receivers * receivers;
  int *fds = malloc(n * sizeof *fds);
  for (int i = 0; i < n; i++) {
    fds[i] = accept(ls, 0, 0);
    setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  struct io_uring ring;
  if (uring && io_uring_queue_init(4096, &ring, 0)) { fprintf(stderr, "io_uring unavailable\n"); return 1; }
  char msg[30];
  memset(msg, 'x', sizeof msg);
  if (per_round > n) per_round = n;
  usleep(500000);
  long long c0 = cpu_ns();
  double start = now();
  int next = 0;  // the first socket of this round
  for (int r = 0; r < rounds; r++) {
    double t = now();
    if (!uring) {
      for (int k = 0; k < per_round; k++)
        if (send(fds[(next + k) % n], msg, sizeof msg, MSG_DONTWAIT) != sizeof msg) fprintf(stderr, "short send\n");
    } else {
      for (int base = 0; base < per_round; base += batch) {
        int m = base + batch > per_round ? per_round - base : batch;
        for (int k = base; k < base + m; k++)
          io_uring_prep_send(io_uring_get_sqe(&ring), fds[(next + k) % n], msg, sizeof msg, MSG_DONTWAIT);
        io_uring_submit_and_wait(&ring, m);
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
          if (cqe->res != sizeof msg) fprintf(stderr, "send returned %d\n", cqe->res);
          seen++;
        }
        io_uring_cq_advance(&ring, seen);
      }
    }
    next = (next + per_round) % n;
    double left = period - (now() - t);
    if (left > 0) usleep(left * 1e6);
  }
  long long used = cpu_ns() - c0;
  double per = used / 1e3 / ((double)rounds * per_round);
  if (per_round == n) {
    printf("%s, N=%d, %d receivers, batch %d: %.2f us of sender CPU per send\n",
           uring ? "io_uring" : "send(2)", n, receivers, uring ? batch : 1, per);
  } else {
    printf("%s, N=%d, %d receivers, batch %d, %d sockets every %.0f ms: %.2f us of sender CPU per send, "
           "%.2f %% of one core\n",
           uring ? "io_uring" : "send(2)", n, receivers, uring ? batch : 1, per_round, period * 1e3, per,
           100.0 * used / 1e9 / (now() - start));
  }
  for (int i = 0; i < n; i++) close(fds[i]);
  while (wait(0) > 0) {}
  return 0;
}
