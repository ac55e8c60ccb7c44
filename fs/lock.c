/*
 * lock: the per-thread record of lock.h's debug checks.  One definition
 * for every file of fs/, so that a lock taken in one file is known when
 * the thread takes another in the next.
 */
#include "lock.h"

_Thread_local unsigned fs_lock_ranks_held;
