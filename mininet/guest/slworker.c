/* The guests' workload generator: one static binary, run by the guest's /init.
 *
 *   slworker KIND FILL_MIB WS_MIB RATE_MBPS PEER_IP PORT [DISK_FILL_MIB WRITE_MIBPS]
 *
 * Every kind first fills FILL_MIB of memory with non-zero data once (so a
 * migration has real pages to send: QEMU sends zero pages as a flag only), then:
 *   memory   rewrites a working set of WS_MIB in a loop (one word per 64 bytes)
 *   cpu      spins on arithmetic, writing no memory
 *   net-out  sends UDP datagrams of 1400 bytes to PEER_IP:PORT at RATE_MBPS
 *   net-in   receives UDP on PORT (a sender outside sends at RATE_MBPS)
 *   idle     sleeps
 *   disk-steady  writes WRITE_MIBPS MiB/s to its disk (/dev/vda), steadily
 *   disk-burst   writes the same on average, in bursts: 10 s worth at once,
 *                as fast as the disk takes it, every 10 s
 * The disk writers write past the first DISK_FILL_MIB of the disk, in 1 MiB
 * blocks, cycling, each pass with new contents. The first DISK_FILL_MIB were
 * written by the host before boot (mininet/testbed) and never change: a child
 * process reads them in a loop and prints "slworker: disksum HEX over N MiB"
 * after each full read, so a storage migration that moved the disk intact
 * keeps the sum (whatever the workload).
 * Whatever the kind, every 3 s it prints a checksum of the filled memory
 * ("slworker: memsum HEX over N MiB"): the filled memory never changes, so a
 * migration that moved it intact keeps the sum (the tests and
 * experiments/guest-deaths compare it before and after); the fill is seeded
 * from the boot-time clock, so the sum is this VM's own and not a constant a
 * fresh boot would reproduce.
 * It never exits: it runs as the guest's workload until the VM is destroyed. */
#define _GNU_SOURCE /* O_DIRECT */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static uint64_t *blocks[1 << 14]; /* the fill: up to 16 GiB in 1 MiB blocks */
static size_t nblocks;
static double next_sum;

/* Prints the fill's checksum when it is due (every 3 s); the workloads call it
 * from their loops. Reading the fill dirties no page. */
static void memsum_if_due(void) {
  if (now() < next_sum) return;
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t k = 0; k < nblocks; k++)
    for (size_t i = 0; i < (1 << 20) / 8; i++) h = (h ^ blocks[k][i]) * 0x100000001b3ull;
  printf("slworker: memsum %016llx over %zu MiB\n", (unsigned long long)h, nblocks);
  fflush(stdout);
  next_sum = now() + 3;
}

#define DISK "/dev/vda"
#define MIB (1 << 20)

/* The disk's size in MiB, or 0 when the VM has no disk. */
static size_t disk_mib(void) {
  FILE *f = fopen("/sys/block/vda/size", "r");
  unsigned long long sectors = 0;
  if (!f) return 0;
  if (fscanf(f, "%llu", &sectors) != 1) sectors = 0;
  fclose(f);
  return (size_t)(sectors * 512 / MIB);
}

/* The child that checksums the disk's fill, forever. O_DIRECT: the guest's
 * page cache is smaller than the fill, and every pass must read the disk, not
 * what the guest remembers of it. */
static void disksum_loop(size_t fill_mib) {
  int fd = open(DISK, O_RDONLY | O_DIRECT);
  void *buf;
  if (fd < 0 || posix_memalign(&buf, 4096, MIB)) {
    perror("disksum");
    _exit(1);
  }
  for (;;) {
    uint64_t h = 0xcbf29ce484222325ull;
    size_t k = 0;
    for (; k < fill_mib; k++) {
      if (pread(fd, buf, MIB, (off_t)k * MIB) != MIB) break;
      const uint64_t *w = buf;
      for (size_t i = 0; i < MIB / 8; i++) h = (h ^ w[i]) * 0x100000001b3ull;
    }
    if (k == fill_mib) printf("slworker: disksum %016llx over %zu MiB\n", (unsigned long long)h, k);
    else printf("slworker: disksum read error at MiB %zu\n", k);
    fflush(stdout);
    sleep(2);
  }
}

/* Writes WRITE_MIBPS on average past the fill; bursty: ten seconds' worth at
 * once every ten seconds. Never returns. */
static void disk_writer(size_t fill_mib, double mibps, int bursty) {
  size_t size = disk_mib();
  int fd = open(DISK, O_WRONLY | O_DIRECT);
  uint64_t *buf;
  if (fd < 0 || size <= fill_mib || posix_memalign((void **)&buf, 4096, MIB)) {
    fprintf(stderr, "slworker: no disk to write past %zu MiB\n", fill_mib);
    for (;;) { memsum_if_due(); sleep(1); }
  }
  size_t next = fill_mib;
  uint64_t pass = 1, written = 0;
  double t = now(), every = mibps > 0 ? 1 / mibps : 1;
  for (;;) {
    size_t n = bursty ? (size_t)(mibps * 10 + 0.5) : 1;
    if (n < 1) n = 1;
    for (size_t b = 0; b < n; b++) {
      for (size_t i = 0; i < MIB / 8; i++) buf[i] = pass * 0x9e3779b97f4a7c15ull ^ (next << 20) ^ i;
      if (pwrite(fd, buf, MIB, (off_t)next * MIB) != MIB) perror("slworker: disk write");
      written++;
      if (++next >= size) { next = fill_mib; pass++; }
    }
    if (written % 64 < n) {
      printf("slworker: wrote %llu MiB to the disk\n", (unsigned long long)written);
      fflush(stdout);
    }
    memsum_if_due();
    t += every * n;
    double d = t - now();
    if (d > 0) {
      struct timespec ts = {(time_t)d, (long)((d - (time_t)d) * 1e9)};
      nanosleep(&ts, 0);
    } else if (d < -10) {
      t = now(); /* fell far behind (paused by a migration): no catching up */
    }
  }
}

int main(int argc, char **argv) {
  if (argc < 7) {
    fprintf(stderr, "usage: slworker KIND FILL_MIB WS_MIB RATE_MBPS PEER_IP PORT\n");
    return 2;
  }
  const char *kind = argv[1];
  size_t fill = (size_t)atol(argv[2]) << 20, ws = (size_t)atol(argv[3]) << 20;
  double rate = atof(argv[4]);
  const char *peer = argv[5];
  int port = atoi(argv[6]);
  size_t disk_fill = argc > 7 ? (size_t)atol(argv[7]) : 0;
  double write_mibps = argc > 8 ? atof(argv[8]) : 0;

  /* Never more than what the guest has free, less a margin: an OOM kill of
   * this process (the guest's PID 1) would panic the guest. */
  FILE *mi = fopen("/proc/meminfo", "r");
  char line[128];
  long avail_kib = -1;
  while (mi && fgets(line, sizeof line, mi))
    if (sscanf(line, "MemAvailable: %ld kB", &avail_kib) == 1) break;
  if (mi) fclose(mi);
  size_t margin = ws + (24 << 20);
  if (avail_kib >= 0) {
    size_t avail = (size_t)avail_kib << 10;
    size_t cap = avail > margin ? avail - margin : 0;
    if (fill > cap) fill = cap;
  }
  size_t filled = 0;
  struct timespec boot;
  clock_gettime(CLOCK_REALTIME, &boot);
  unsigned seed = (unsigned)boot.tv_nsec ^ (unsigned)boot.tv_sec;
  for (; filled < fill && nblocks < sizeof blocks / sizeof *blocks; filled += 1 << 20) {
    /* in 1 MiB chunks: as much as fits */
    unsigned char *f = malloc(1 << 20);
    if (!f) break;
    for (size_t i = 0; i < 1 << 20; i++) f[i] = (unsigned char)(((filled + i) * 2654435761u ^ seed) >> 13) | 1;
    blocks[nblocks++] = (uint64_t *)f;
  }
  /* The guest's own count of the memory in use once filled (MemTotal -
   * MemFree): what tests compare solive's non-zero page count with. */
  long total_kib = -1, free_kib = -1;
  mi = fopen("/proc/meminfo", "r");
  while (mi && fgets(line, sizeof line, mi)) {
    sscanf(line, "MemTotal: %ld kB", &total_kib);
    sscanf(line, "MemFree: %ld kB", &free_kib);
  }
  if (mi) fclose(mi);
  printf("slworker: %s filled %zu MiB (available was %ld MiB), in use %ld KiB of %ld KiB, ready\n", kind,
         filled >> 20, avail_kib >> 10, total_kib - free_kib, total_kib);
  fflush(stdout);

  size_t dsize = disk_mib();
  if (dsize && disk_fill) {
    if (disk_fill > dsize) disk_fill = dsize;
    printf("slworker: disk of %zu MiB, fill %zu MiB\n", dsize, disk_fill);
    fflush(stdout);
    if (fork() == 0) disksum_loop(disk_fill);
  }

  if (!strcmp(kind, "disk-steady") || !strcmp(kind, "disk-burst")) {
    disk_writer(disk_fill, write_mibps, !strcmp(kind, "disk-burst"));
  } else if (!strcmp(kind, "memory")) {
    if (!ws) ws = 1 << 20;
    volatile uint64_t *b = malloc(ws);
    if (!b) { perror("ws"); return 1; }
    for (uint64_t pass = 1;; pass++) {
      for (size_t i = 0; i < ws / 8; i += 8) b[i] = pass ^ i;
      memsum_if_due();
    }
  } else if (!strcmp(kind, "cpu")) {
    volatile uint64_t x = 1;
    for (;;) {
      for (int i = 0; i < 1 << 20; i++) x = x * 6364136223846793005ull + 1442695040888963407ull;
      memsum_if_due();
    }
  } else if (!strcmp(kind, "net-out") || !strcmp(kind, "net-in")) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    static char buf[65536];
    if (!strcmp(kind, "net-in")) {
      a.sin_addr.s_addr = INADDR_ANY;
      if (bind(s, (struct sockaddr *)&a, sizeof a)) { perror("bind"); return 1; }
      struct timeval wake = {0, 500000}; /* so the checksum is printed with no traffic too */
      setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &wake, sizeof wake);
      for (;;) {
        recv(s, buf, sizeof buf, 0);
        memsum_if_due();
      }
    }
    inet_pton(AF_INET, peer, &a.sin_addr);
    memset(buf, 0x5a, 1400);
    double per = rate > 0 ? 1400 * 8 / (rate * 1e6) : 0.01, t = now();
    for (;;) {
      sendto(s, buf, 1400, 0, (struct sockaddr *)&a, sizeof a);
      memsum_if_due();
      t += per;
      double d = t - now();
      if (d > 0) {
        struct timespec ts = {(time_t)d, (long)((d - (time_t)d) * 1e9)};
        nanosleep(&ts, 0);
      } else if (d < -1) {
        t = now(); /* fell far behind (e.g. paused by a migration): no burst */
      }
    }
  }
  for (;;) {
    memsum_if_due();
    sleep(1);
  }
}
