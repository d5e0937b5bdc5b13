# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_flameprobe_global_optspecs
    string join \n v/verbose h/help V/version
end

function __fish_flameprobe_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_flameprobe_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_flameprobe_using_subcommand
    set -l cmd (__fish_flameprobe_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c flameprobe -n "__fish_flameprobe_needs_command" -s v -l verbose -d 'More messages on stderr (-v: details and libbpf\'s log, -vv: debug)'
complete -c flameprobe -n "__fish_flameprobe_needs_command" -s h -l help -d 'Print help'
complete -c flameprobe -n "__fish_flameprobe_needs_command" -s V -l version -d 'Print version'
complete -c flameprobe -n "__fish_flameprobe_needs_command" -f -a "record" -d 'Record a flame graph of where targets spend CPU time, wait off the CPU or leak memory'
complete -c flameprobe -n "__fish_flameprobe_needs_command" -f -a "report" -d 'Print the top functions and the call tree of a profile file'
complete -c flameprobe -n "__fish_flameprobe_needs_command" -f -a "convert" -d 'Convert a profile between folded, pprof, SVG and speedscope (also reads perf script)'
complete -c flameprobe -n "__fish_flameprobe_needs_command" -f -a "diff" -d 'Compare two profiles: a differential flame graph (red: grew, blue: shrank) or `stack before after` lines'
complete -c flameprobe -n "__fish_flameprobe_needs_command" -f -a "push" -d 'Push profile files (pprof or folded) to Grafana Pyroscope'
complete -c flameprobe -n "__fish_flameprobe_needs_command" -f -a "doctor" -d 'Check what works on this machine (kernel, BTF, perf events, privileges, runtimes, JVMs) and how to fix what does not'
complete -c flameprobe -n "__fish_flameprobe_needs_command" -f -a "completions" -d 'Print shell completions to stdout'
complete -c flameprobe -n "__fish_flameprobe_needs_command" -f -a "generate" -d 'Write completions and man pages into DIR (for packaging)'
complete -c flameprobe -n "__fish_flameprobe_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -s p -l pid -d 'Profile these processes (all their threads); repeat or comma-separate' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l tid -d 'Record only these threads (of the --pid targets, or of their own processes when no other target is given); repeat or comma-separate' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l thread -d 'Record only the threads whose name matches this regular expression (also threads started or renamed during the recording)' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l container -d 'Profile every process in these containers, also those started in them later: a name, a full id or a unique id prefix (4+ hex digits); repeat or comma-separate' -r -f
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l pod -d 'Profile every container of these pods, also processes started in them later: a pod name, or namespace/name for a Kubernetes pod (or a unique pod id prefix); repeat or comma-separate' -r -f
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -s d -l duration -d 'How long to record: e.g. 500ms, 30s, 2m [default: 10s; with a command: until it exits]' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -s F -l frequency -d 'Samples per second on each CPU' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -s o -l output -d 'Output file; `-` writes folded stacks to stdout [default: flame.svg; with --every: none, the pushes are the output]' -r -F
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -s f -l format -d 'Output format (default: from the file extension: .svg, .folded/.txt, .pb.gz/.pprof/.pb, .speedscope.json)' -r -f -a "svg\t'Interactive flame graph (SVG)'
folded\t'Folded stacks: `frame;frame;... count` per line'
pprof\t'gzip-compressed pprof protobuf (go tool pprof, Pyroscope, Grafana)'
speedscope\t'speedscope JSON: one profile per thread, samples in time order (https://www.speedscope.app, `npx speedscope FILE`)'"
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l group-by -d 'Group stacks under their process by pid (`[1234]nginx`) or by name (`nginx`) [default: comm for the whole machine, else pid]' -r -f -a "pid\t'`[1234]nginx`: every process apart'
comm\t'`nginx`: processes of the same name together (a whole machine with many short-lived processes)'"
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l unwind -d 'How user stacks are unwound: auto (DWARF where binaries have CFI, frame pointers elsewhere), dwarf, or fp (frame pointers only: smallest records, loses callers in code built without them)' -r -f -a "auto\t'DWARF where the binary has CFI, frame pointers otherwise, per sample'
dwarf\t'DWARF/CFI unwinding of a copy of the user stack'
fp\t'Frame pointers walked in the kernel (smallest, cheapest record)'"
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l stack-size -d 'Bytes of user stack copied per sample for DWARF unwinding, 4K to 64K (e.g. 16K, 32768). Deeper stacks are marked [truncated]' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l title -d 'Title of the SVG' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l colors -d 'SVG palette: hot, mem, io, red, green, blue, aqua, yellow, purple, orange, wakeup, java, js, perl, python, rust' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l min-width -d 'Leave out SVG frames narrower than this many pixels (default 0.1)' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l probe -d 'What to record: CPU time, user-space memory leaks (memleak), kernel memory leaks (kmemleak), time off the CPU (offcpu: blocked, sleeping, waiting), or wall-clock time (wall: on-CPU + off-CPU)' -r -f -a "cpu\t'On-CPU stacks, sampled (flame graph of CPU time)'
memleak\t'User-space memory allocated during the recording and not freed by its end'
kmemleak\t'Kernel memory (slab and pages) allocated during the recording and not freed'
offcpu\t'Time threads spent off the CPU (blocked, sleeping, waiting), per stack'
wall\t'Wall-clock time per thread: on-CPU samples plus off-CPU time'"
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l min-block -d 'offcpu/wall: leave out shorter times off the CPU (counted apart in the summary) [default: 1us]' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l state -d 'offcpu/wall: which reasons to be off the CPU to record: sleep (interruptible, S), disk (uninterruptible, D) or all [default: all]' -r -f -a "all\t'Sleeping (S) and waiting uninterruptibly (D), preempted, stopped'
sleep\t'Interruptible sleep (S): timers, locks, network, pipes'
disk\t'Uninterruptible sleep (D): mostly disk and other I/O'"
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l min-age -d 'memleak/kmemleak: leave out allocations younger than this at the end of the recording (in flight, not leaked); 0 keeps all [default: 500ms]' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l sample-bytes -d 'memleak: sample each allocated byte with probability 1/N (estimates scaled back up) instead of tracking every allocation; e.g. 512k' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l push -d 'Also push the profile to Grafana Pyroscope at this URL (http or https; credentials as https://USER:TOKEN@host)' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l every -d 'With --push: record window after window of this length, pushing each as it ends, until -d (or forever without it) or Ctrl-C; e.g. 15s' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l push-spool -d 'With --every: windows kept while pushes fail (the oldest is dropped beyond this) [default: 16]' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l push-api -d 'The receiver\'s API: push (push.v1.PusherService/Push, pprof) or ingest (the legacy /ingest, folded stacks) [default: push]' -r -f -a "push\t'The push API (`push.v1.PusherService/Push`): what Grafana Alloy and the Pyroscope SDKs use; pprof with every sample type and label'
ingest\t'The legacy `/ingest` API of older servers: folded stacks, one value per stack'"
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l service -d 'service_name of the pushed profiles [default: the container\'s name for --container, else the target program\'s name, else each series\' own or the host name]' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l label -d 'Another label of the pushed series, NAME=VALUE (repeatable)' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l push-split -d 'Push one series per container or per process (labels container, pod, namespace / pid, process_name), instead of one with those as sample labels' -r -f -a "container\t'One series per container (labels container, pod, namespace); processes outside containers in one more'
pid\t'One series per process (labels pid, process_name, and its container\'s)'"
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l push-header -d 'An HTTP header of every push, \'Name: value\' (repeatable), e.g. \'X-Scope-OrgID: team-a\' or \'Authorization: Bearer TOKEN\'' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l push-timeout -d 'Longest time one push request may take [default: 30s; connecting: 5s at most]' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -s a -l all -d 'Profile the whole machine (the default when no target is given)'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l report -d 'Also print the top-functions report (to stderr when the profile goes to stdout)'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l include-idle -d 'Include the idle task (CPU time spent idle) in whole-system profiles'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l no-threads -d 'Do not add a frame with the thread name under each process'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l icicle -d 'Draw the SVG as an icicle: the flame graph upside down, root at the top (`--reverse` is its old name)'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l inverted -d 'Draw the SVG inverted: stacks merged by their leaf function, every function on the top row with its callers below it (inferno\'s --reverse --inverted)'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l flamechart -d 'Draw the SVG as a flame chart: each thread\'s samples in time order, not merged (cpu and wall recordings have sample times; other profiles are merged by stack, heaviest first)'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -s q -l quiet -d 'No progress line and no summary on stderr'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l bpf-stats -d 'Report the BPF program\'s average run time per sample (its overhead on the profiled CPUs) in the summary'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -l no-jit-attach -d 'Do not ask Java VMs (HotSpot, JDK 17+) for their perf map at the end of the recording (it costs each JVM a safepoint); a map they already wrote is still read'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -s v -l verbose -d 'More messages on stderr (-v: details and libbpf\'s log, -vv: debug)'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand record" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand report" -l focus -d 'Keep only stacks with a frame matching this regular expression' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand report" -l min-percent -d 'Leave out tree nodes under this share of the total' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand report" -l top -d 'Rows in the top-functions table (0 = all)' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand report" -l diff -d 'Compare with this base profile: the functions whose value changed most, absolute and in percent of the base\'s total (as go tool pprof -top -diff_base)' -r -F
complete -c flameprobe -n "__fish_flameprobe_using_subcommand report" -l sample-type -d 'With --diff: the value compared, a sample type both profiles have: its name (samples, cpu, ...) or name/unit [default: the value the report shows]' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand report" -l tree -d 'Also print the merged call tree: total, self and count per frame'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand report" -l by-thread -d 'Also print each thread\'s totals (for wall-clock profiles: total, on-CPU and off-CPU time)'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand report" -l no-inline -d 'Give the time of inlined functions (`name_[i]` frames) to the function they were inlined into: the top table then agrees with profilers that do not show inlining (perf without --inline)'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand report" -l json -d 'Print the report (top table and tree) as JSON'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand report" -s v -l verbose -d 'More messages on stderr (-v: details and libbpf\'s log, -vv: debug)'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand report" -s h -l help -d 'Print help'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand convert" -s o -l output -d 'Output file; `-` writes folded stacks to stdout' -r -F
complete -c flameprobe -n "__fish_flameprobe_using_subcommand convert" -s f -l format -d 'Output format (default: from the file extension)' -r -f -a "svg\t'Interactive flame graph (SVG)'
folded\t'Folded stacks: `frame;frame;... count` per line'
pprof\t'gzip-compressed pprof protobuf (go tool pprof, Pyroscope, Grafana)'
speedscope\t'speedscope JSON: one profile per thread, samples in time order (https://www.speedscope.app, `npx speedscope FILE`)'"
complete -c flameprobe -n "__fish_flameprobe_using_subcommand convert" -l group-by -d 'Group stacks under their process by pid (`[1234]nginx`) or by name (`nginx`)' -r -f -a "pid\t'`[1234]nginx`: every process apart'
comm\t'`nginx`: processes of the same name together (a whole machine with many short-lived processes)'"
complete -c flameprobe -n "__fish_flameprobe_using_subcommand convert" -l title -d 'Title of the SVG' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand convert" -l colors -d 'SVG palette: hot, mem, io, red, green, blue, aqua, yellow, purple, orange, wakeup, java, js, perl, python, rust' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand convert" -l min-width -d 'Leave out SVG frames narrower than this many pixels (default 0.1)' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand convert" -l no-threads -d 'Do not add a frame with the thread name under each process'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand convert" -l icicle -d 'Draw the SVG as an icicle: the flame graph upside down, root at the top (`--reverse` is its old name)'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand convert" -l inverted -d 'Draw the SVG inverted: stacks merged by their leaf function, every function on the top row with its callers below it (inferno\'s --reverse --inverted)'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand convert" -l flamechart -d 'Draw the SVG as a flame chart: each thread\'s samples in time order, not merged (cpu and wall recordings have sample times; other profiles are merged by stack, heaviest first)'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand convert" -s v -l verbose -d 'More messages on stderr (-v: details and libbpf\'s log, -vv: debug)'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand convert" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand diff" -s o -l output -d 'Output file: .svg (differential flame graph) or .folded/.txt (`stack before after` lines); `-` writes the lines to stdout' -r -F
complete -c flameprobe -n "__fish_flameprobe_using_subcommand diff" -s f -l format -d 'Output format (default: from the file extension)' -r -f -a "svg\t'A differential flame graph (SVG)'
folded\t'`stack before after` lines (inferno-flamegraph and FlameGraph\'s flamegraph.pl draw them)'"
complete -c flameprobe -n "__fish_flameprobe_using_subcommand diff" -l sample-type -d 'The value compared, a sample type both profiles have: its name (samples, cpu, inuse_space, ...) or name/unit [default: the first, the flame graph\'s width]' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand diff" -l group-by -d 'Group stacks under their process by name (`nginx`) or by pid (`[1234]nginx`)' -r -f -a "pid\t'`[1234]nginx`: every process apart'
comm\t'`nginx`: processes of the same name together (a whole machine with many short-lived processes)'"
complete -c flameprobe -n "__fish_flameprobe_using_subcommand diff" -l title -d 'Title of the SVG' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand diff" -l min-width -d 'Leave out SVG frames narrower than this many pixels (default 0.1)' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand diff" -l negate -d 'Draw the widths of BEFORE instead of AFTER (red still means more in AFTER)'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand diff" -l normalize -d 'Scale BEFORE to AFTER\'s total first, so that colors show shifts in share rather than a change of load'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand diff" -l no-threads -d 'Do not add a frame with the thread name under each process'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand diff" -s v -l verbose -d 'More messages on stderr (-v: details and libbpf\'s log, -vv: debug)'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand diff" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand push" -l url -d 'The receiver\'s URL (http or https; credentials as https://USER:TOKEN@host)' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand push" -l push-api -d 'The receiver\'s API: push (push.v1.PusherService/Push, pprof) or ingest (the legacy /ingest, folded stacks) [default: push]' -r -f -a "push\t'The push API (`push.v1.PusherService/Push`): what Grafana Alloy and the Pyroscope SDKs use; pprof with every sample type and label'
ingest\t'The legacy `/ingest` API of older servers: folded stacks, one value per stack'"
complete -c flameprobe -n "__fish_flameprobe_using_subcommand push" -l service -d 'service_name of the pushed profiles [default: the container\'s name for --container, else the target program\'s name, else each series\' own or the host name]' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand push" -l label -d 'Another label of the pushed series, NAME=VALUE (repeatable)' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand push" -l push-split -d 'Push one series per container or per process (labels container, pod, namespace / pid, process_name), instead of one with those as sample labels' -r -f -a "container\t'One series per container (labels container, pod, namespace); processes outside containers in one more'
pid\t'One series per process (labels pid, process_name, and its container\'s)'"
complete -c flameprobe -n "__fish_flameprobe_using_subcommand push" -l push-header -d 'An HTTP header of every push, \'Name: value\' (repeatable), e.g. \'X-Scope-OrgID: team-a\' or \'Authorization: Bearer TOKEN\'' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand push" -l push-timeout -d 'Longest time one push request may take [default: 30s; connecting: 5s at most]' -r
complete -c flameprobe -n "__fish_flameprobe_using_subcommand push" -s q -l quiet -d 'Only errors on stderr'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand push" -s v -l verbose -d 'More messages on stderr (-v: details and libbpf\'s log, -vv: debug)'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand push" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand doctor" -l json -d 'Print the checks and the probes as JSON'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand doctor" -s v -l verbose -d 'More messages on stderr (-v: details and libbpf\'s log, -vv: debug)'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand doctor" -s h -l help -d 'Print help'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand completions" -s v -l verbose -d 'More messages on stderr (-v: details and libbpf\'s log, -vv: debug)'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand completions" -s h -l help -d 'Print help'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand generate" -s v -l verbose -d 'More messages on stderr (-v: details and libbpf\'s log, -vv: debug)'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand generate" -s h -l help -d 'Print help'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand help; and not __fish_seen_subcommand_from record report convert diff push doctor completions generate help" -f -a "record" -d 'Record a flame graph of where targets spend CPU time, wait off the CPU or leak memory'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand help; and not __fish_seen_subcommand_from record report convert diff push doctor completions generate help" -f -a "report" -d 'Print the top functions and the call tree of a profile file'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand help; and not __fish_seen_subcommand_from record report convert diff push doctor completions generate help" -f -a "convert" -d 'Convert a profile between folded, pprof, SVG and speedscope (also reads perf script)'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand help; and not __fish_seen_subcommand_from record report convert diff push doctor completions generate help" -f -a "diff" -d 'Compare two profiles: a differential flame graph (red: grew, blue: shrank) or `stack before after` lines'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand help; and not __fish_seen_subcommand_from record report convert diff push doctor completions generate help" -f -a "push" -d 'Push profile files (pprof or folded) to Grafana Pyroscope'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand help; and not __fish_seen_subcommand_from record report convert diff push doctor completions generate help" -f -a "doctor" -d 'Check what works on this machine (kernel, BTF, perf events, privileges, runtimes, JVMs) and how to fix what does not'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand help; and not __fish_seen_subcommand_from record report convert diff push doctor completions generate help" -f -a "completions" -d 'Print shell completions to stdout'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand help; and not __fish_seen_subcommand_from record report convert diff push doctor completions generate help" -f -a "generate" -d 'Write completions and man pages into DIR (for packaging)'
complete -c flameprobe -n "__fish_flameprobe_using_subcommand help; and not __fish_seen_subcommand_from record report convert diff push doctor completions generate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
