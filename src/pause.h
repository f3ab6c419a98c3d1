/* SPDX-License-Identifier: MIT */
/*
 * Pause points: places in the library where a test can hold the thread
 * that reaches them, to force an interleaving that timing alone gives
 * once in millions of runs. Only the copy of the library built with
 * WP_PAUSE_POINTS for tests/test_races.c has them; in every other build
 * a pause point compiles to nothing.
 */
#ifndef WP_PAUSE_H
#define WP_PAUSE_H

enum wp__pause_site {
	/* An add has read the handle's state and checked it, no more. */
	WP__PAUSE_ADD_CHECKED = 1,
	/* A call has checked the handle and not yet counted itself in. */
	WP__PAUSE_ENTER,
	/* A closing handle's queue has run; its exit is not yet decided. */
	WP__PAUSE_CLOSE,
	/* A graceful unregister has marked the handle closing, no more. */
	WP__PAUSE_CLOSE_ASK,
	/* A graceful unregister's context has ended; no unregister yet. */
	WP__PAUSE_CLOSE_GIVE_UP,
};

#ifdef WP_PAUSE_POINTS
/* Defined by the test program. */
void wp__pause(enum wp__pause_site site);
#define WP__PAUSE(site) wp__pause(site)
#else
#define WP__PAUSE(site) ((void)0)
#endif

#endif
