/*
 * pause: the process that holds a pod sandbox's namespaces open, in the spirit of Kubernetes' pause container.
 *
 * It blocks in pause() forever, exits 0 on SIGINT or SIGTERM, reaps every child that ends (it is PID 1 of the
 * sandbox when the pod shares its PID namespace, so orphans are re-parented to it), and prints its version with -v.
 *
 * Build it static, so the image needs no libc:
 *   gcc -static -Os -o pause pause.c && strip pause
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define STRINGIFY(x) #x
#define VERSION_STRING(x) STRINGIFY(x)
#ifndef VERSION
#define VERSION 3.10-ferry
#endif

static void write_stderr(const char *message) {
    /* Only async-signal-safe calls in the handlers: write(2), not stdio. */
    size_t length = strlen(message);
    while (length > 0) {
        ssize_t written = write(STDERR_FILENO, message, length);
        if (written < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        message += written;
        length -= (size_t)written;
    }
}

static void sigdown(int signo) {
    write_stderr(signo == SIGTERM ? "pause: shutting down, got SIGTERM\n" : "pause: shutting down, got SIGINT\n");
    _exit(0);
}

static void sigreap(int signo) {
    (void)signo;
    int saved_errno = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    errno = saved_errno;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; ++i) {
        if (!strcasecmp(argv[i], "-v") || !strcasecmp(argv[i], "--version")) {
            printf("pause.c %s\n", VERSION_STRING(VERSION));
            return 0;
        }
    }

    if (getpid() != 1)
        /* Not an error: pause is also used outside sandboxes. */
        write_stderr("pause: warning: pause should be the first process\n");

    struct sigaction down;
    memset(&down, 0, sizeof down);
    down.sa_handler = sigdown;
    sigemptyset(&down.sa_mask);
    if (sigaction(SIGINT, &down, NULL) < 0)
        return 1;
    if (sigaction(SIGTERM, &down, NULL) < 0)
        return 2;

    struct sigaction reap;
    memset(&reap, 0, sizeof reap);
    reap.sa_handler = sigreap;
    reap.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigemptyset(&reap.sa_mask);
    if (sigaction(SIGCHLD, &reap, NULL) < 0)
        return 3;

    for (;;)
        pause();

    write_stderr("pause: error: infinite loop terminated\n");
    return 42;
}
