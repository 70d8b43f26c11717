/*
 * rvpdriver: a headless libpurple program that signs one account on with
 * Pidgin's RVP plugin (librvp, Debian's pidgin-librvp), reads commands on
 * standard input and prints what happens on standard output, one event a
 * line. It exists so that the project's tests can drive the real RVP
 * client against the server.
 *
 *   rvpdriver -user alice@example.test -password PW [-server 127.0.0.1:8080]
 *             [-domain EXAMPLE] [-dir USERDIR] [-myhost HOST] [-debug]
 *
 * Without -server, librvp finds its server as it does on a desktop: SRV
 * record, else <domain> on port 80.
 *
 * Commands (one a line):
 *   status ID          online busy idle back-soon away on-phone at-lunch offline
 *   add BUDDY          add BUDDY (alias@domain) to the buddy list
 *   send BUDDY TEXT    send an instant message
 *   typing BUDDY       send a typing notification
 *   quit               sign off and exit
 *
 * Events:
 *   READY                     the driver runs
 *   SIGNED_ON
 *   PRESENCE BUDDY STATUS ONLINE(0|1)
 *   IM SENDER TEXT            (newlines in TEXT as \n)
 *   TYPING SENDER
 *   CONV_ERROR TEXT           an error written into a conversation
 *   CONNECTION_ERROR TEXT
 *   SIGNED_OFF
 *
 * librvp finds its server with a DNS SRV lookup of _rvp._tcp.<domain>
 * (res_search, straight from the C library); the driver defines
 * res_search itself, answers that lookup with -server and passes every
 * other query on, so no DNS is needed.
 *
 * librvp's own defects (see ../shared/docs/librvp-wire.md §12) are worked
 * around so that a failing test means a server problem:
 *   - it calls gtk_events_pending, gtk_main_iteration, setkey and encrypt
 *     without linking their libraries: they are provided here (DES through
 *     libgcrypt, which librvp uses already);
 *   - its close routine can spin forever when answers come fast: the
 *     driver reports "no events pending" once after every iteration, and a
 *     watchdog ends a hang;
 *   - after sign-off it may connect with freed data: the driver cancels
 *     the connection's pending connects at signed-off.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <gcrypt.h>
#include <glib.h>
#include <purple.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define UI_ID "rvpdriver"

static PurpleAccount *account;
static char *server_host;
static int server_port;
static GMainLoop *loop;
static gboolean quitting;

static void emit(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void emit(const char *fmt, ...) {
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

/* One line, newlines escaped. */
static char *oneline(const char *s) {
	GString *b = g_string_new(NULL);
	for (; s && *s; s++) {
		if (*s == '\n')
			g_string_append(b, "\\n");
		else if (*s != '\r')
			g_string_append_c(b, *s);
	}
	return g_string_free(b, FALSE);
}

/* --- symbols librvp expects from its host --- */

static int reported_idle;

int gtk_events_pending(void) {
	if (reported_idle == 0) {
		reported_idle = 1; /* let librvp's close loop test its exit condition */
		return 0;
	}
	return g_main_context_pending(NULL);
}

void gtk_main_iteration(void) {
	g_main_context_iteration(NULL, TRUE);
	reported_idle = 0;
}

static gcry_cipher_hd_t des;
static int des_open;

/* setkey and encrypt: the old crypt(3) DES interface, one bit a char. */
void setkey(const char *key) {
	unsigned char k[8] = {0};
	for (int i = 0; i < 64; i++)
		if (key[i] & 1)
			k[i / 8] |= 0x80 >> (i % 8);
	if (!des_open) {
		gcry_cipher_open(&des, GCRY_CIPHER_DES, GCRY_CIPHER_MODE_ECB, 0);
		des_open = 1;
	}
	gcry_cipher_ctl(des, 61 /* GCRYCTL_SET_ALLOW_WEAK_KEY */, NULL, 1);
	gcry_cipher_setkey(des, k, 8);
}

void encrypt(char *block, int edflag) {
	unsigned char in[8] = {0}, out[8];
	for (int i = 0; i < 64; i++)
		if (block[i] & 1)
			in[i / 8] |= 0x80 >> (i % 8);
	if (edflag)
		gcry_cipher_decrypt(des, out, 8, in, 8);
	else
		gcry_cipher_encrypt(des, out, 8, in, 8);
	for (int i = 0; i < 64; i++)
		block[i] = (out[i / 8] >> (7 - i % 8)) & 1;
}

/* res_search: answer SRV _rvp._tcp.* with -server. */
static int put_name(unsigned char *p, const char *name) {
	int n = 0;
	while (*name) {
		const char *dot = strchr(name, '.');
		int len = dot ? (int)(dot - name) : (int)strlen(name);
		p[n++] = len;
		memcpy(p + n, name, len);
		n += len;
		name += len + (dot ? 1 : 0);
	}
	p[n++] = 0;
	return n;
}

int res_search(const char *dname, int class, int type, unsigned char *answer, int anslen) {
	if (type == 33 && strncmp(dname, "_rvp._tcp.", 10) == 0 && server_host && anslen >= 512) {
		emit("SRV %s", dname);
		unsigned char *p = answer;
		memset(p, 0, 12);
		p[2] = 0x81, p[3] = 0x80; /* response, recursion desired and available */
		p[5] = 1;                 /* one question */
		p[7] = 1;                 /* one answer */
		int n = 12;
		n += put_name(p + n, dname);
		p[n++] = 0, p[n++] = 33, p[n++] = 0, p[n++] = 1;
		p[n++] = 0xc0, p[n++] = 12; /* the question's name */
		p[n++] = 0, p[n++] = 33, p[n++] = 0, p[n++] = 1;
		p[n++] = 0, p[n++] = 0, p[n++] = 0, p[n++] = 60; /* TTL */
		int rdlen_at = n;
		n += 2;
		p[n++] = 0, p[n++] = 0; /* priority */
		p[n++] = 0, p[n++] = 0; /* weight */
		p[n++] = server_port >> 8, p[n++] = server_port & 0xff;
		n += put_name(p + n, server_host);
		int rdlen = n - rdlen_at - 2;
		p[rdlen_at] = rdlen >> 8, p[rdlen_at + 1] = rdlen & 0xff;
		return n;
	}
	int (*real)(const char *, int, int, unsigned char *, int) = dlsym(RTLD_NEXT, "res_search");
	return real ? real(dname, class, type, answer, anslen) : -1;
}

/* --- event loop --- */

typedef struct {
	PurpleInputFunction function;
	guint result;
	gpointer data;
} IOClosure;

static gboolean io_invoke(GIOChannel *source, GIOCondition condition, gpointer data) {
	IOClosure *c = data;
	int cond = 0;
	if (condition & (G_IO_IN | G_IO_HUP | G_IO_ERR))
		cond |= PURPLE_INPUT_READ;
	if (condition & (G_IO_OUT | G_IO_HUP | G_IO_ERR | G_IO_NVAL))
		cond |= PURPLE_INPUT_WRITE;
	c->function(c->data, g_io_channel_unix_get_fd(source), cond);
	return TRUE;
}

static guint input_add(gint fd, PurpleInputCondition condition, PurpleInputFunction function, gpointer data) {
	IOClosure *c = g_new0(IOClosure, 1);
	GIOCondition cond = 0;
	c->function = function;
	c->data = data;
	if (condition & PURPLE_INPUT_READ)
		cond |= G_IO_IN | G_IO_HUP | G_IO_ERR;
	if (condition & PURPLE_INPUT_WRITE)
		cond |= G_IO_OUT | G_IO_HUP | G_IO_ERR | G_IO_NVAL;
	GIOChannel *ch = g_io_channel_unix_new(fd);
	c->result = g_io_add_watch_full(ch, G_PRIORITY_DEFAULT, cond, io_invoke, c, g_free);
	g_io_channel_unref(ch);
	return c->result;
}

static PurpleEventLoopUiOps loop_ops = {
	g_timeout_add, g_source_remove, input_add, g_source_remove, NULL, g_timeout_add_seconds, NULL, NULL, NULL,
};

/* --- what happens --- */

static void write_conv(PurpleConversation *conv, const char *who, const char *alias, const char *message, PurpleMessageFlags flags, time_t mtime) {
	if (flags & PURPLE_MESSAGE_ERROR) {
		char *m = oneline(message);
		emit("CONV_ERROR %s", m);
		g_free(m);
	}
}

static PurpleConversationUiOps conv_ops = {
	NULL, NULL, NULL, NULL, write_conv, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
};

static void signed_on(PurpleConnection *gc, gpointer data) { emit("SIGNED_ON"); }

static void signed_off(PurpleConnection *gc, gpointer data) {
	purple_proxy_connect_cancel_with_handle(gc);
	emit("SIGNED_OFF");
	if (quitting)
		g_main_loop_quit(loop);
}

static void connection_error(PurpleConnection *gc, PurpleConnectionError err, const char *desc, gpointer data) {
	char *m = oneline(desc);
	emit("CONNECTION_ERROR %s", m);
	g_free(m);
}

static void buddy_status(PurpleBuddy *buddy, PurpleStatus *old, PurpleStatus *now, gpointer data) {
	emit("PRESENCE %s %s %d", purple_buddy_get_name(buddy), purple_status_get_id(now),
	     purple_presence_is_online(purple_buddy_get_presence(buddy)) ? 1 : 0);
}

static void buddy_on(PurpleBuddy *buddy, gpointer data) {
	PurpleStatus *st = purple_presence_get_active_status(purple_buddy_get_presence(buddy));
	emit("PRESENCE %s %s 1", purple_buddy_get_name(buddy), st ? purple_status_get_id(st) : "?");
}

static void buddy_off(PurpleBuddy *buddy, gpointer data) { emit("PRESENCE %s offline 0", purple_buddy_get_name(buddy)); }

static void received_im(PurpleAccount *acct, char *sender, char *message, PurpleConversation *conv, PurpleMessageFlags flags, gpointer data) {
	char *plain = purple_markup_strip_html(message);
	char *m = oneline(plain);
	emit("IM %s %s", sender, m);
	g_free(m);
	g_free(plain);
}

static void typing(PurpleAccount *acct, const char *name, gpointer data) { emit("TYPING %s", name); }

/* --- commands --- */

static void quit_now(void) {
	quitting = TRUE;
	alarm(15); /* watchdog: librvp's close may hang */
	if (purple_account_is_disconnected(account))
		g_main_loop_quit(loop);
	else
		purple_account_set_enabled(account, UI_ID, FALSE);
}

static void command(char *line) {
	char *cmd = strtok(line, " \t\r\n");
	char *arg = strtok(NULL, " \t\r\n");
	char *rest = strtok(NULL, "\r\n");
	if (!cmd)
		return;
	if (!strcmp(cmd, "quit")) {
		quit_now();
	} else if (!strcmp(cmd, "status") && arg) {
		purple_account_set_status(account, arg, TRUE, NULL);
	} else if (!strcmp(cmd, "add") && arg) {
		PurpleBuddy *b = purple_buddy_new(account, arg, NULL);
		purple_blist_add_buddy(b, NULL, NULL, NULL);
		purple_account_add_buddy(account, b);
	} else if (!strcmp(cmd, "send") && arg && rest) {
		PurpleConversation *c = purple_conversation_new(PURPLE_CONV_TYPE_IM, account, arg);
		purple_conv_im_send(PURPLE_CONV_IM(c), rest);
	} else if (!strcmp(cmd, "deny") && arg) {
		/* Pidgin's "Block": librvp writes a deny ACE for the principal. */
		purple_privacy_deny_add(account, arg, FALSE);
	} else if (!strcmp(cmd, "allow") && arg) {
		purple_privacy_deny_remove(account, arg, FALSE);
	} else if (!strcmp(cmd, "typing") && arg) {
		PurpleConnection *gc = purple_account_get_connection(account);
		if (gc)
			serv_send_typing(gc, arg, PURPLE_TYPING);
	} else {
		emit("BAD_COMMAND %s", cmd);
	}
}

static gboolean stdin_ready(GIOChannel *ch, GIOCondition cond, gpointer data) {
	char *line = NULL;
	GIOStatus st = g_io_channel_read_line(ch, &line, NULL, NULL, NULL);
	if (st == G_IO_STATUS_NORMAL && line) {
		command(line);
		g_free(line);
		return TRUE;
	}
	if (st == G_IO_STATUS_EOF || st == G_IO_STATUS_ERROR) {
		quit_now();
		return FALSE;
	}
	return TRUE;
}

static void on_alarm(int sig) {
	static const char m[] = "WATCHDOG\n";
	if (write(1, m, sizeof m - 1) < 0) {
	}
	_exit(quitting ? 0 : 3);
}

static void usage(void) {
	fprintf(stderr, "usage: rvpdriver -user alias@domain -password PW [-server host:port] [-domain NTDOMAIN] [-dir USERDIR] [-myhost HOST] [-debug]\n");
	exit(2);
}

int main(int argc, char **argv) {
	const char *user = NULL, *password = NULL, *server = NULL, *domain = "", *dir = NULL, *myhost = "127.0.0.1";
	gboolean debug = FALSE;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-debug"))
			debug = TRUE;
		else if (i + 1 >= argc)
			usage();
		else if (!strcmp(argv[i], "-user"))
			user = argv[++i];
		else if (!strcmp(argv[i], "-password"))
			password = argv[++i];
		else if (!strcmp(argv[i], "-server"))
			server = argv[++i];
		else if (!strcmp(argv[i], "-domain"))
			domain = argv[++i];
		else if (!strcmp(argv[i], "-dir"))
			dir = argv[++i];
		else if (!strcmp(argv[i], "-myhost"))
			myhost = argv[++i];
		else
			usage();
	}
	if (!user || !password)
		usage();
	if (server) {
		const char *colon = strrchr(server, ':');
		if (!colon)
			usage();
		server_host = g_strndup(server, colon - server);
		server_port = atoi(colon + 1);
	}

	signal(SIGALRM, on_alarm);
	signal(SIGPIPE, SIG_IGN);
	gcry_check_version(NULL);
	gcry_control(GCRYCTL_DISABLE_SECMEM, 0);
	gcry_control(GCRYCTL_INITIALIZATION_FINISHED, 0);

	loop = g_main_loop_new(NULL, FALSE);
	char *tmp = NULL;
	if (!dir)
		dir = tmp = g_dir_make_tmp("rvpdriver-XXXXXX", NULL);
	purple_util_set_user_dir(dir);
	purple_debug_set_enabled(debug);
	purple_eventloop_set_ui_ops(&loop_ops);
	purple_conversations_set_ui_ops(&conv_ops);
	if (!purple_core_init(UI_ID)) {
		fprintf(stderr, "rvpdriver: libpurple did not start\n");
		return 1;
	}
	purple_set_blist(purple_blist_new());
	if (!purple_plugins_find_with_id("prpl-rvp")) {
		fprintf(stderr, "rvpdriver: the RVP plugin (prpl-rvp) is not installed; install pidgin-librvp\n");
		return 4;
	}

	void *h = purple_connections_get_handle();
	purple_signal_connect(h, "signed-on", &h, PURPLE_CALLBACK(signed_on), NULL);
	purple_signal_connect(h, "signed-off", &h, PURPLE_CALLBACK(signed_off), NULL);
	purple_signal_connect(h, "connection-error", &h, PURPLE_CALLBACK(connection_error), NULL);
	void *bl = purple_blist_get_handle();
	purple_signal_connect(bl, "buddy-status-changed", &h, PURPLE_CALLBACK(buddy_status), NULL);
	purple_signal_connect(bl, "buddy-signed-on", &h, PURPLE_CALLBACK(buddy_on), NULL);
	purple_signal_connect(bl, "buddy-signed-off", &h, PURPLE_CALLBACK(buddy_off), NULL);
	void *cv = purple_conversations_get_handle();
	purple_signal_connect(cv, "received-im-msg", &h, PURPLE_CALLBACK(received_im), NULL);
	purple_signal_connect(cv, "buddy-typing", &h, PURPLE_CALLBACK(typing), NULL);

	account = purple_account_new(user, "prpl-rvp");
	purple_account_set_password(account, password);
	purple_account_set_string(account, "domain", domain);
	purple_account_set_string(account, "myhost", myhost);
	purple_account_set_bool(account, "fast_logout", TRUE);
	purple_accounts_add(account);
	purple_account_set_enabled(account, UI_ID, TRUE);

	GIOChannel *in = g_io_channel_unix_new(0);
	g_io_add_watch(in, G_IO_IN | G_IO_HUP | G_IO_ERR, stdin_ready, NULL);
	emit("READY");
	g_main_loop_run(loop);
	if (tmp) {
		char *cmd = g_strdup_printf("rm -rf '%s'", tmp);
		if (system(cmd) != 0) {
		}
		g_free(cmd);
	}
	_exit(0); /* skip libpurple's teardown: librvp's data is gone already */
}
