"""The shell: files, clock, threads, sockets and the command line, around the core."""
