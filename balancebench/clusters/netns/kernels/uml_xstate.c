/* Loaded into linux.uml (LD_PRELOAD) so that Debian's UML 6.1 runs on hosts with a large XSAVE area.
 *
 * UML saves and restores its processes' FPU state with PTRACE_SETREGSET(NT_X86_XSTATE) and a buffer of
 * the size it was built for (832 bytes: x87/SSE, header, AVX). The host kernel refuses a buffer that is
 * not its whole XSAVE area with EFAULT (arch/x86/kernel/fpu/regset.c, xstateregs_set), which on CPUs with
 * AVX-512 and AMX (~11 KB) kills UML's init at boot: "userspace - ptrace set fp regs failed, errno = 14".
 * Only then, this reads the tracee's whole area, lays UML's bytes over its start and sets the whole area.
 * Every other ptrace call goes to libc's unchanged. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

typedef long (*ptrace_fn)(int, pid_t, void *, void *);
static unsigned char whole[1 << 16];

long ptrace(enum __ptrace_request request, ...) {
    static ptrace_fn libc_ptrace;
    va_list args;
    va_start(args, request);
    pid_t pid = va_arg(args, pid_t);
    void *addr = va_arg(args, void *);
    void *data = va_arg(args, void *);
    va_end(args);
    if (!libc_ptrace) libc_ptrace = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
    long done = libc_ptrace(request, pid, addr, data);
    if (done == -1 && errno == EFAULT && request == PTRACE_SETREGSET && (long)addr == NT_X86_XSTATE) {
        struct iovec *given = data, area = {whole, sizeof whole};
        if (libc_ptrace(PTRACE_GETREGSET, pid, addr, &area) == -1 || given->iov_len > area.iov_len) {
            errno = EFAULT;
            return -1;
        }
        memcpy(whole, given->iov_base, given->iov_len);
        done = libc_ptrace(PTRACE_SETREGSET, pid, addr, &area);
    }
    return done;
}
