/* backend: placeholder until the backends land. */
#include <errno.h>

int backend_placeholder(void);
int backend_placeholder(void)
{
	return -ENOSYS;
}
