#!/bin/sh
# ctest's dist_dead_rank: `dist_dead_rank.sh TEST_DIST MPIRUN ARGS...` runs test_dist's two
# dead-rank cases under mpirun and checks that each ends the job with a non-zero status and
# a message naming the failure, well within ctest's TIMEOUT (the `timeout` here only keeps a
# regression from hanging until then).
#  exit: rank 1 exits without MPI_Finalize; Open MPI's mpirun then kills the job and says
#        which rank exited "improperly" (MPI's behaviour, checked so a change shows up).
#  hang: rank 1 lives on without calling collectives; rank 0's all-reduce gives up after
#        AG_DIST_TIMEOUT seconds with ag's error naming the operation and rank (ag's code).
test_dist=$1
shift
status=0
for how in exit hang; do
    out=$(AG_DIST_TIMEOUT=2 timeout 60 "$@" "$test_dist" --dead-rank "$how" 2>&1)
    rc=$?
    case $how in
    exit) want='exit|exited|terminated' ;;
    hang) want='ag_comm allreduce_sum on rank 0 of 2: not completed after 2 s' ;;
    esac
    if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || ! printf '%s\n' "$out" | grep -Eq "$want"; then
        echo "dead rank ($how): want a non-zero exit (not 124, the timeout) and /$want/;" \
            "got $rc and:"
        printf '%s\n' "$out"
        status=1
    else
        echo "dead rank ($how): exit status $rc, as expected"
    fi
done
exit $status
