/*
 * hide_avx512.so: run a program as if its x86 CPU had AVX2 but no AVX-512 and no VNNI.
 *
 * What for: timing segzoo's runtimes on the code paths an AVX2-only CPU (AMD Zen 3, Intel before
 * Ice Lake) runs, on a machine that has AVX-512. oneDNN, XNNPACK, ONNX Runtime's MLAS and numpy pick
 * their kernels from CPUID; this library makes CPUID answer without AVX-512F/CD/BW/DQ/VL/IFMA/VBMI/
 * VBMI2/VNNI/BITALG/VPOPCNTDQ/BF16/FP16 and without AVX-VNNI, so every library in the process runs its
 * AVX2 kernels. The cores stay what they are: this shows the AVX2 code paths at this machine's speed,
 * not another CPU's speed, so read the results as ratios between rows of one run.
 *
 * How: Linux CPUID faulting (arch_prctl ARCH_SET_CPUID; the kernel lists "cpuid_fault" in
 * /proc/cpuinfo where the CPU or hypervisor supports it). With it on, a CPUID instruction raises
 * SIGSEGV; the handler below runs the real CPUID with faulting briefly off, clears the bits, writes
 * the registers back and steps over the instruction. Faulting is inherited by threads and children
 * and reset by exec, so LD_PRELOAD (inherited by exec'd children) covers subprocesses too.
 *
 * Build and use:
 *     cc -O2 -shared -fPIC -o hide_avx512.so benchmarks/hide_avx512.c
 *     LD_PRELOAD=$PWD/hide_avx512.so python benchmarks/latency.py ...
 * The benchmarks' headers then list the hidden extensions ("... listed by the kernel but hidden from
 * programs"), because numpy's own CPUID check no longer finds them.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

/* CPUID leaf 7 sub-leaf 0: EBX, ECX and EDX bits of AVX-512 (and its relatives) to clear. */
#define LEAF7_EBX ((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) | (1u << 31))
#define LEAF7_ECX ((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14))
#define LEAF7_EDX ((1u << 2) | (1u << 3) | (1u << 8) | (1u << 23))
/* Leaf 7 sub-leaf 1, EAX: AVX-VNNI (bit 4) and AVX512_BF16 (bit 5). */
#define LEAF7_1_EAX ((1u << 4) | (1u << 5))
/* Leaf 0xD sub-leaf 0, EAX: the XSAVE state components of AVX-512 (opmask, ZMM upper halves, ZMM16-31). */
#define LEAF_D_EAX 0xe0u

static struct sigaction previous_handler;

static void real_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t registers[4]) {
  syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
  __asm__ volatile("cpuid"
                   : "=a"(registers[0]), "=b"(registers[1]), "=c"(registers[2]), "=d"(registers[3])
                   : "a"(leaf), "c"(subleaf));
  syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
}

static void on_fault(int signal_number, siginfo_t *info, void *context) {
  greg_t *registers = ((ucontext_t *)context)->uc_mcontext.gregs;
  const unsigned char *instruction = (const unsigned char *)registers[REG_RIP];
  if (instruction[0] == 0x0f && instruction[1] == 0xa2) { /* CPUID */
    uint32_t leaf = (uint32_t)registers[REG_RAX], subleaf = (uint32_t)registers[REG_RCX], r[4];
    real_cpuid(leaf, subleaf, r);
    if (leaf == 7 && subleaf == 0) {
      r[1] &= ~LEAF7_EBX;
      r[2] &= ~LEAF7_ECX;
      r[3] &= ~LEAF7_EDX;
    } else if (leaf == 7 && subleaf == 1) {
      r[0] &= ~LEAF7_1_EAX;
    } else if (leaf == 0xd && subleaf == 0) {
      r[0] &= ~LEAF_D_EAX;
    }
    registers[REG_RAX] = r[0];
    registers[REG_RBX] = r[1];
    registers[REG_RCX] = r[2];
    registers[REG_RDX] = r[3];
    registers[REG_RIP] += 2;
    return;
  }
  /* A real fault: whoever handled SIGSEGV before us, else the default (a core dump). */
  if ((previous_handler.sa_flags & SA_SIGINFO) && previous_handler.sa_sigaction) {
    previous_handler.sa_sigaction(signal_number, info, context);
  } else if (previous_handler.sa_handler != SIG_DFL && previous_handler.sa_handler != SIG_IGN) {
    previous_handler.sa_handler(signal_number);
  } else {
    signal(SIGSEGV, SIG_DFL);
    raise(SIGSEGV);
  }
}

__attribute__((constructor)) static void hide_avx512(void) {
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = on_fault;
  action.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigaction(SIGSEGV, &action, &previous_handler);
  if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
    sigaction(SIGSEGV, &previous_handler, NULL);
    fprintf(stderr, "hide_avx512: this kernel or CPU has no CPUID faulting (no cpuid_fault in /proc/cpuinfo); "
                    "AVX-512 stays visible\n");
  }
}
