/*
 * tr50gw_auth: the Mosquitto 2.0 plugin that tells the tr50gw gateway who a device is.
 *
 * broker/README.md is the contract this file implements; read it first. In short:
 *   - CONNECT: username = thing key and password = an app token (whose SHA-256 the gateway lists
 *     in a credentials file) authenticates a thing. No client may take over the client id of a
 *     connection that authenticated with another username.
 *   - PUBLISH: every incoming message gets a header in front of its payload saying who sent it
 *     (the connection, the client id, and for a thing its org, app and key), and a thing's
 *     api/... topics move into its namespace, api/<client id>/...
 *   - Replies: the gateway's reply on reply/<client id>/... for a thing is delivered to that one
 *     client, subscribed or not, as reply/..., and to nobody else; so is one carrying
 *     `tr50gw-deliver` (a v5 Response Topic the thing asked for).
 *
 * How Mosquitto 2.0 drives a plugin (plugin API version 5): it calls mosquitto_plugin_init once,
 * where we register one callback per event. An authentication or access-check callback answers
 * MOSQ_ERR_SUCCESS (allowed), MOSQ_ERR_AUTH / MOSQ_ERR_ACL_DENIED (refused) or
 * MOSQ_ERR_PLUGIN_DEFER (no opinion: the next check decides, here the password_file and
 * acl_file of mosquitto.conf; when every check defers, the answer is no). All callbacks run on
 * the broker's one thread, so nothing here needs a lock.
 *
 * What Mosquitto 2.0.11 does that this relies on (each checked by experiment; the tests in
 * tests/test_broker_plugin.py would fail if it changed):
 *   - An incoming PUBLISH is access-checked (MOSQ_ACL_WRITE) on the topic the client sent,
 *     BEFORE MOSQ_EVT_MESSAGE; so a thing's `api/0001` must be granted here, and the rewritten
 *     topic is not checked again.
 *   - A copy sent with mosquitto_broker_publish_copy(clientid, ...) is queued straight to that
 *     client: no MOSQ_ACL_READ check runs for it (none reached this plugin, and a client whose
 *     acl_file allows only reply/<its id>/# still received `reply/0001`), whatever the header's
 *     comment says. So no READ grant is needed for copies; subscriptions and the messages they
 *     bring stay entirely the acl_file's business.
 *   - MOSQ_EVT_MESSAGE may replace the message's topic and payload (allocated with
 *     mosquitto_malloc): the broker frees the payload it replaces, the plugin the topic
 *     (plugin__handle_message in src/plugin.c; freeing both is a double free).
 *   - A Last Will is published after MOSQ_EVT_DISCONNECT and never passes MOSQ_EVT_MESSAGE, so
 *     it cannot be given its header; it is refused on request topics instead (see on_acl_check).
 *
 * SHA-256 comes from OpenSSL's libcrypto: the broker binary already links it (for TLS), so it
 * costs no extra library at run time, only libssl-dev's headers at build time.
 */

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <mqtt_protocol.h>

#define LOG_PREFIX "tr50gw_auth: "
#define CREDENTIALS_HEADER "tr50gw-credentials 1"
/* The header put in front of every request's payload: IDENTITY_MAGIC, the fields separated by
 * FIELD_SEPARATOR (which no client id holds), then IDENTITY_END (which Mosquitto refuses in
 * client ids and usernames, as every control character). */
#define IDENTITY_MAGIC "\0tr50gw "
#define IDENTITY_MAGIC_LEN 8
#define IDENTITY_END '\n'
#define FIELD_SEPARATOR '/'
#define DELIVER_PROPERTY "tr50gw-deliver" /* on a gateway reply: to whom, on which topic */
#define DIGEST_LEN 32 /* SHA-256 */
#define HEX_ID_LEN 32 /* appId and orgId: 32 lowercase hex characters */
#define MAX_TOPIC_LEN 65535
#define INITIAL_BUCKETS 256

/* ---------------------------------------------------------------------------------------------
 * State
 * ------------------------------------------------------------------------------------------ */

/* One `app` line of the credentials file. */
struct app {
	char app_id[HEX_ID_LEN + 1];
	char org_id[HEX_ID_LEN + 1];
	unsigned char token_digest[DIGEST_LEN];
};

/* What the credentials file said when it was last read. */
struct credentials {
	struct app *apps;
	size_t app_count;
	char **thing_keys; /* decoded, sorted (strcmp) for bsearch */
	size_t thing_count;
};

/* Which version of the file `struct credentials` came from: a rename gives a new inode. */
struct file_stamp {
	bool exists;
	dev_t device;
	ino_t inode;
	off_t size;
	struct timespec mtime;
};

/* One client connection, from its CONNECT (MOSQ_EVT_BASIC_AUTH) to MOSQ_EVT_DISCONNECT. */
struct connection {
	struct mosquitto *client; /* the broker's handle: the key */
	char *client_id;
	char *username; /* NULL for an anonymous client */
	char conn_id[48]; /* unique per CONNECT */
	char *header; /* what device_message puts in front of each payload (connection_header) */
	size_t header_len;
	bool is_thing; /* authenticated here with an app token */
	char org_id[HEX_ID_LEN + 1];
	char app_id[HEX_ID_LEN + 1];
	unsigned char token_digest[DIGEST_LEN]; /* of the token it connected with */
	struct connection *next_by_client; /* chain in connections.by_client */
	struct connection *next_by_id; /* chain in connections.by_id */
};

/* A hash table with two indexes over the same entries: by client pointer (every event carries
 * one) and by client id (to see who holds an id). Chained; doubles when full. */
struct connection_table {
	struct connection **by_client;
	struct connection **by_id;
	size_t bucket_count; /* a power of two */
	size_t count;
};

struct plugin {
	mosquitto_plugin_id_t *identifier;
	char *credentials_path;
	char *gateway_username;
	struct credentials credentials;
	struct file_stamp stamp;
	struct timespec last_tick_check;
	char boot_id[17]; /* random per broker start, so a connection id is never seen twice */
	unsigned long long connections_made;
	struct connection_table connections;
};

/* ---------------------------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------------------------ */

static int hex_value(char c)
{
	if(c >= '0' && c <= '9') return c - '0';
	if(c >= 'a' && c <= 'f') return c - 'a' + 10;
	if(c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

/* Whether `text` is exactly `length` lowercase hex digits. */
static bool is_lower_hex(const char *text, size_t length)
{
	if(strlen(text) != length) return false;
	for(size_t i = 0; i < length; i++) {
		if(!((text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f'))) {
			return false;
		}
	}
	return true;
}

/* Decode `hex` (even length) into `out` (hex length / 2 bytes). 0 on success. */
static int hex_decode(const char *hex, unsigned char *out)
{
	size_t length = strlen(hex);
	if(length % 2) return -1;
	for(size_t i = 0; i < length / 2; i++) {
		int high = hex_value(hex[2 * i]);
		int low = hex_value(hex[2 * i + 1]);
		if(high < 0 || low < 0) return -1;
		out[i] = (unsigned char)(high * 16 + low);
	}
	return 0;
}

/* `a` followed by `b`, in memory the broker may free (mosquitto_malloc). */
static char *concat(const char *a, const char *b)
{
	size_t a_len = strlen(a), b_len = strlen(b);
	char *joined = mosquitto_malloc(a_len + b_len + 1);
	if(joined == NULL) return NULL;
	memcpy(joined, a, a_len);
	memcpy(joined + a_len, b, b_len + 1);
	return joined;
}

static uint64_t hash_pointer(const void *pointer)
{
	/* A 64-bit finalizer: heap pointers differ mostly in their middle bits. */
	uint64_t x = (uint64_t)(uintptr_t)pointer;
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return x;
}

static uint64_t hash_string(const char *text)
{
	uint64_t hash = 14695981039346656037ULL; /* FNV-1a */
	for(; *text; text++) {
		hash ^= (unsigned char)*text;
		hash *= 1099511628211ULL;
	}
	return hash;
}

static double seconds_between(const struct timespec *earlier, const struct timespec *later)
{
	return (double)(later->tv_sec - earlier->tv_sec)
		+ (double)(later->tv_nsec - earlier->tv_nsec) / 1e9;
}

/* `api`, `api/...`, `apiz`, `apiz/...`: the topics a device sends requests on. */
static bool is_request_topic(const char *topic)
{
	return (strncmp(topic, "api", 3) == 0 && (topic[3] == '\0' || topic[3] == '/'))
		|| (strncmp(topic, "apiz", 4) == 0 && (topic[4] == '\0' || topic[4] == '/'));
}

/* ---------------------------------------------------------------------------------------------
 * The credentials file (format in broker/README.md)
 * ------------------------------------------------------------------------------------------ */

static void credentials_free(struct credentials *credentials)
{
	for(size_t i = 0; i < credentials->thing_count; i++) {
		mosquitto_free(credentials->thing_keys[i]);
	}
	mosquitto_free(credentials->thing_keys);
	mosquitto_free(credentials->apps);
	memset(credentials, 0, sizeof(*credentials));
}

static int compare_strings(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Make room for element number `count` of an array that grows by doubling. Its capacity is
 * the smallest power of two above its count, so it is full when the count is 0 or a power of
 * two. 0 on success. */
static int grow_array(void **array, size_t count, size_t element_size)
{
	if((count & (count - 1)) == 0) {
		void *bigger = mosquitto_realloc(*array, (count ? 2 * count : 1) * element_size);
		if(bigger == NULL) return -1;
		*array = bigger;
	}
	return 0;
}

/* `app <appId> <orgId> <sha256 hex>`; 0 when added, -1 when the line is malformed or on OOM. */
static int parse_app_line(char *fields, struct credentials *credentials)
{
	char *app_id = strsep(&fields, " ");
	char *org_id = strsep(&fields, " ");
	char *digest_hex = strsep(&fields, " ");
	struct app *app;

	if(fields != NULL || app_id == NULL || org_id == NULL || digest_hex == NULL) return -1;
	if(!is_lower_hex(app_id, HEX_ID_LEN) || !is_lower_hex(org_id, HEX_ID_LEN)
			|| !is_lower_hex(digest_hex, 2 * DIGEST_LEN)) {
		return -1;
	}
	if(grow_array((void **)&credentials->apps, credentials->app_count, sizeof(struct app))) {
		return -1;
	}
	app = &credentials->apps[credentials->app_count];
	memcpy(app->app_id, app_id, HEX_ID_LEN + 1);
	memcpy(app->org_id, org_id, HEX_ID_LEN + 1);
	hex_decode(digest_hex, app->token_digest);
	credentials->app_count++;
	return 0;
}

/* `thing <hex of the key's UTF-8 bytes>`; 0 when added, -1 when malformed or on OOM. */
static int parse_thing_line(const char *hex, struct credentials *credentials)
{
	size_t length = strlen(hex) / 2;
	char *key;

	if(strchr(hex, ' ') != NULL || length == 0) return -1;
	key = mosquitto_malloc(length + 1);
	if(key == NULL) return -1;
	/* A key holding a NUL byte could never be a client id, so it is malformed here. */
	if(hex_decode(hex, (unsigned char *)key) || memchr(key, '\0', length) != NULL) {
		mosquitto_free(key);
		return -1;
	}
	key[length] = '\0';
	if(grow_array((void **)&credentials->thing_keys, credentials->thing_count, sizeof(char *))) {
		mosquitto_free(key);
		return -1;
	}
	credentials->thing_keys[credentials->thing_count++] = key;
	return 0;
}

/* Read the credentials file from `file`. 0 on success; on a missing or wrong header, -1 and
 * nothing in `out`. A malformed line is skipped (and logged): one bad line should not lock
 * every device out. Unknown record types are skipped silently, for later versions. */
static int credentials_read(FILE *file, const char *path, struct credentials *out)
{
	char *line = NULL;
	size_t capacity = 0;
	ssize_t length;
	unsigned line_number = 0;
	bool header_seen = false;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	while((length = getline(&line, &capacity, file)) >= 0) {
		char *fields = line;
		char *kind;

		line_number++;
		while(length > 0 && (line[length - 1] == '\n' || line[length - 1] == '\r')) {
			line[--length] = '\0';
		}
		if(length == 0 || line[0] == '#') continue;
		if(!header_seen) {
			if(strcmp(line, CREDENTIALS_HEADER) != 0) {
				mosquitto_log_printf(MOSQ_LOG_ERR,
						LOG_PREFIX "%s does not start with \"" CREDENTIALS_HEADER "\"; ignored",
						path);
				rc = -1;
				break;
			}
			header_seen = true;
			continue;
		}
		kind = strsep(&fields, " ");
		if(strcmp(kind, "app") == 0) {
			if(fields == NULL || parse_app_line(fields, out)) {
				mosquitto_log_printf(MOSQ_LOG_WARNING,
						LOG_PREFIX "%s line %u: malformed app line skipped", path, line_number);
			}
		}else if(strcmp(kind, "thing") == 0) {
			if(fields == NULL || parse_thing_line(fields, out)) {
				mosquitto_log_printf(MOSQ_LOG_WARNING,
						LOG_PREFIX "%s line %u: malformed thing line skipped", path, line_number);
			}
		}
	}
	free(line); /* getline's buffer comes from the C library's malloc */
	if(rc == 0 && !header_seen) {
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "%s is empty; ignored", path);
		rc = -1;
	}
	if(rc) {
		credentials_free(out);
		return rc;
	}
	qsort(out->thing_keys, out->thing_count, sizeof(char *), compare_strings);
	return 0;
}

/* The app whose token this is, or NULL. Compared in constant time, digest against digest. */
static const struct app *credentials_find_app(const struct credentials *credentials,
		const char *token)
{
	unsigned char digest[DIGEST_LEN];
	unsigned int digest_len = 0;
	const struct app *found = NULL;

	if(token == NULL || token[0] == '\0') return NULL;
	if(!EVP_Digest(token, strlen(token), digest, &digest_len, EVP_sha256(), NULL)) return NULL;
	for(size_t i = 0; i < credentials->app_count; i++) {
		if(CRYPTO_memcmp(digest, credentials->apps[i].token_digest, DIGEST_LEN) == 0) {
			found = &credentials->apps[i];
		}
	}
	return found;
}

/* Whether the app still exists with the token a thing connected with (not deleted, not
 * given a new token since). */
static bool credentials_still_valid(const struct credentials *credentials, const char *app_id,
		const unsigned char *token_digest)
{
	for(size_t i = 0; i < credentials->app_count; i++) {
		if(strcmp(credentials->apps[i].app_id, app_id) == 0) {
			return CRYPTO_memcmp(credentials->apps[i].token_digest, token_digest, DIGEST_LEN) == 0;
		}
	}
	return false;
}

static bool credentials_has_thing(const struct credentials *credentials, const char *key)
{
	return credentials->thing_count > 0
		&& bsearch(&key, credentials->thing_keys, credentials->thing_count, sizeof(char *),
				compare_strings) != NULL;
}

/* ---------------------------------------------------------------------------------------------
 * The connection table
 * ------------------------------------------------------------------------------------------ */

static int table_init(struct connection_table *table, size_t bucket_count)
{
	table->by_client = mosquitto_calloc(bucket_count, sizeof(struct connection *));
	table->by_id = mosquitto_calloc(bucket_count, sizeof(struct connection *));
	table->bucket_count = bucket_count;
	table->count = 0;
	if(table->by_client == NULL || table->by_id == NULL) {
		mosquitto_free(table->by_client);
		mosquitto_free(table->by_id);
		return -1;
	}
	return 0;
}

static void table_link(struct connection_table *table, struct connection *connection)
{
	size_t mask = table->bucket_count - 1;
	struct connection **client_bucket = &table->by_client[hash_pointer(connection->client) & mask];
	struct connection **id_bucket = &table->by_id[hash_string(connection->client_id) & mask];

	connection->next_by_client = *client_bucket;
	*client_bucket = connection;
	connection->next_by_id = *id_bucket;
	*id_bucket = connection;
}

/* Double the buckets and relink every entry; on OOM the table just stays as it is. */
static void table_grow(struct connection_table *table)
{
	struct connection_table bigger;
	if(table_init(&bigger, table->bucket_count * 2)) return;
	for(size_t i = 0; i < table->bucket_count; i++) {
		struct connection *connection = table->by_client[i];
		while(connection != NULL) {
			struct connection *next = connection->next_by_client;
			table_link(&bigger, connection);
			connection = next;
		}
	}
	bigger.count = table->count;
	mosquitto_free(table->by_client);
	mosquitto_free(table->by_id);
	*table = bigger;
}

static void table_add(struct connection_table *table, struct connection *connection)
{
	if(table->count >= table->bucket_count) table_grow(table);
	table_link(table, connection);
	table->count++;
}

static struct connection *table_find(const struct connection_table *table,
		const struct mosquitto *client)
{
	struct connection *connection =
		table->by_client[hash_pointer(client) & (table->bucket_count - 1)];
	while(connection != NULL && connection->client != client) {
		connection = connection->next_by_client;
	}
	return connection;
}

/* Unlink the entry of `client` from both indexes and return it (NULL if there is none). */
static struct connection *table_remove(struct connection_table *table,
		const struct mosquitto *client)
{
	size_t mask = table->bucket_count - 1;
	struct connection **link = &table->by_client[hash_pointer(client) & mask];
	struct connection *connection;

	while(*link != NULL && (*link)->client != client) link = &(*link)->next_by_client;
	connection = *link;
	if(connection == NULL) return NULL;
	*link = connection->next_by_client;

	link = &table->by_id[hash_string(connection->client_id) & mask];
	while(*link != connection) link = &(*link)->next_by_id;
	*link = connection->next_by_id;

	table->count--;
	return connection;
}

static void connection_free(struct connection *connection)
{
	if(connection == NULL) return;
	mosquitto_free(connection->client_id);
	mosquitto_free(connection->username);
	mosquitto_free(connection->header);
	mosquitto_free(connection);
}

static void table_free(struct connection_table *table)
{
	for(size_t i = 0; i < table->bucket_count; i++) {
		struct connection *connection = table->by_client[i];
		while(connection != NULL) {
			struct connection *next = connection->next_by_client;
			connection_free(connection);
			connection = next;
		}
	}
	mosquitto_free(table->by_client);
	mosquitto_free(table->by_id);
	memset(table, 0, sizeof(*table));
}

/* ---------------------------------------------------------------------------------------------
 * Reloading the credentials
 * ------------------------------------------------------------------------------------------ */

static bool same_file(const struct file_stamp *a, const struct file_stamp *b)
{
	if(a->exists != b->exists) return false;
	if(!a->exists) return true;
	return a->device == b->device && a->inode == b->inode && a->size == b->size
		&& a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

static struct file_stamp stamp_of(const struct stat *status)
{
	struct file_stamp stamp = {
		.exists = true,
		.device = status->st_dev,
		.inode = status->st_ino,
		.size = status->st_size,
		.mtime = status->st_mtim,
	};
	return stamp;
}

/* Disconnect every connected thing whose app is no longer in the credentials (deleted), or
 * holds another token now (rotated). */
static void disconnect_revoked_things(struct plugin *plugin)
{
	char **client_ids = NULL;
	size_t count = 0;

	/* Collect first, kick afterwards: a kick may run MOSQ_EVT_DISCONNECT, which removes
	 * entries from the table we would still be walking. */
	for(size_t i = 0; i < plugin->connections.bucket_count; i++) {
		for(struct connection *connection = plugin->connections.by_client[i]; connection != NULL;
				connection = connection->next_by_client) {
			if(!connection->is_thing
					|| credentials_still_valid(
							&plugin->credentials, connection->app_id, connection->token_digest)) {
				continue;
			}
			if(grow_array((void **)&client_ids, count, sizeof(char *)) == 0) {
				client_ids[count] = mosquitto_strdup(connection->client_id);
				if(client_ids[count] != NULL) count++;
			}
		}
	}
	for(size_t i = 0; i < count; i++) {
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				LOG_PREFIX "disconnecting client %s: its app token is no longer valid", client_ids[i]);
		mosquitto_kick_client_by_clientid(client_ids[i], false);
		mosquitto_free(client_ids[i]);
	}
	mosquitto_free(client_ids);
}

/* Re-read the credentials file if it is not the one read last time (inode, size or mtime), or
 * always when `force`. A file that is missing, unreadable or has no valid header counts as
 * empty: no thing can connect until the gateway writes a good one. */
static void credentials_refresh(struct plugin *plugin, bool force)
{
	struct stat status;
	struct file_stamp now = {.exists = false};
	struct credentials fresh = {0};
	FILE *file = NULL;
	int error = 0;

	if(stat(plugin->credentials_path, &status) == 0) {
		now = stamp_of(&status);
	}else{
		error = errno;
	}
	if(!force && same_file(&now, &plugin->stamp)) return;

	if(now.exists) {
		file = fopen(plugin->credentials_path, "r");
		if(file == NULL) error = errno;
	}
	if(file == NULL) {
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "cannot read %s (%s): no thing can connect",
				plugin->credentials_path, strerror(error));
		now.exists = false;
	}else{
		/* Stamp what was actually opened: the file may have been replaced since stat(). */
		if(fstat(fileno(file), &status) == 0) now = stamp_of(&status);
		credentials_read(file, plugin->credentials_path, &fresh);
		fclose(file);
	}
	plugin->stamp = now;
	credentials_free(&plugin->credentials);
	plugin->credentials = fresh;
	mosquitto_log_printf(MOSQ_LOG_INFO, LOG_PREFIX "credentials loaded from %s: %zu apps, %zu things",
			plugin->credentials_path, fresh.app_count, fresh.thing_count);
	disconnect_revoked_things(plugin);
}

/* ---------------------------------------------------------------------------------------------
 * MOSQ_EVT_BASIC_AUTH: a CONNECT
 * ------------------------------------------------------------------------------------------ */

/* Whether `client_id` is held right now by a connection that authenticated with a username (a
 * thing or the gateway) other than `username`, or by the same thing key in another org. */
static bool client_id_is_held(const struct plugin *plugin, const char *client_id,
		const char *username, const struct app *app)
{
	const struct connection_table *table = &plugin->connections;
	struct connection *holder = table->by_id[hash_string(client_id) & (table->bucket_count - 1)];

	for(; holder != NULL; holder = holder->next_by_id) {
		if(strcmp(holder->client_id, client_id) != 0) continue;
		if(holder->username == NULL) continue; /* anonymous clients do not protect their id */
		if(username == NULL || strcmp(holder->username, username) != 0) return true;
		if(holder->is_thing && (app == NULL || strcmp(holder->org_id, app->org_id) != 0)) {
			return true;
		}
	}
	return false;
}

/* The header in front of every payload from this connection (broker/README.md): the magic,
 * the fields separated by `/` (which no client id but the gateway's holds: on_basic_auth
 * refuses it), and a newline:
 *     anonymous:  \0tr50gw <conn>/<client id>\n
 *     a thing:    \0tr50gw <conn>/<client id>/<org id>/<app id>/<thing key>\n
 * The thing key comes last: it may hold any character but a control character, `/` included. */
static char *connection_header(const struct connection *connection, size_t *header_len)
{
	/* magic conn / client \n NUL */
	size_t size = IDENTITY_MAGIC_LEN + strlen(connection->conn_id) + 1
		+ strlen(connection->client_id) + 2;
	char *header;
	int written;

	if(connection->is_thing) {
		/* / org / app / thing */
		size += 1 + HEX_ID_LEN + 1 + HEX_ID_LEN + 1 + strlen(connection->username);
	}
	header = mosquitto_malloc(size);
	if(header == NULL) return NULL;
	memcpy(header, IDENTITY_MAGIC, IDENTITY_MAGIC_LEN); /* it starts with a NUL: no snprintf */
	if(connection->is_thing) {
		written = snprintf(header + IDENTITY_MAGIC_LEN, size - IDENTITY_MAGIC_LEN,
				"%s/%s/%s/%s/%s\n", connection->conn_id, connection->client_id,
				connection->org_id, connection->app_id, connection->username);
	}else{
		written = snprintf(header + IDENTITY_MAGIC_LEN, size - IDENTITY_MAGIC_LEN, "%s/%s\n",
				connection->conn_id, connection->client_id);
	}
	*header_len = IDENTITY_MAGIC_LEN + (size_t)written;
	return header;
}

static int remember_connection(struct plugin *plugin, struct mosquitto *client,
		const char *client_id, const char *username, const struct app *app)
{
	struct connection *connection = mosquitto_calloc(1, sizeof(*connection));
	if(connection == NULL) return MOSQ_ERR_NOMEM;
	connection->client = client;
	connection->client_id = mosquitto_strdup(client_id);
	connection->username = username ? mosquitto_strdup(username) : NULL;
	if(connection->client_id == NULL || (username != NULL && connection->username == NULL)) {
		connection_free(connection);
		return MOSQ_ERR_NOMEM;
	}
	snprintf(connection->conn_id, sizeof(connection->conn_id), "%s-%llu", plugin->boot_id,
			++plugin->connections_made);
	if(app != NULL) {
		connection->is_thing = true;
		memcpy(connection->org_id, app->org_id, sizeof(connection->org_id));
		memcpy(connection->app_id, app->app_id, sizeof(connection->app_id));
		memcpy(connection->token_digest, app->token_digest, DIGEST_LEN);
	}
	/* Written once here: each message only copies it. */
	connection->header = connection_header(connection, &connection->header_len);
	if(connection->header == NULL) {
		connection_free(connection);
		return MOSQ_ERR_NOMEM;
	}
	table_add(&plugin->connections, connection);
	return MOSQ_ERR_SUCCESS;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct plugin *plugin = userdata;
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *client_id = mosquitto_client_id(ed->client);
	const char *username = ed->username;
	const struct app *app = NULL;
	int verdict;
	int rc;

	(void)event;
	credentials_refresh(plugin, false);
	/* A pointer is reused once its client is freed; never trust an entry from before. */
	connection_free(table_remove(&plugin->connections, ed->client));
	if(client_id == NULL) return MOSQ_ERR_AUTH;
	if(strchr(client_id, IDENTITY_END) != NULL
			|| (username != NULL && strchr(username, IDENTITY_END) != NULL)) {
		return MOSQ_ERR_AUTH; /* cannot happen: Mosquitto refuses control characters */
	}

	if(strpbrk(client_id, "/+#") != NULL
			&& (username == NULL || strcmp(username, plugin->gateway_username) != 0)) {
		/* The acl_file's %c and the gateway read a client id as one topic level: with a `/`,
		 * client `truck-7/x` could publish into `api/truck-7/...` and have replies land in
		 * truck-7's reply/truck-7/#; `+` and `#` are wildcards. (And the identity header
		 * relies on it: `/` separates its fields.) */
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				LOG_PREFIX "refused client %s: a client id with / + or # is not one topic level",
				client_id);
		return MOSQ_ERR_AUTH;
	}
	if(username == NULL) {
		/* Anonymous: allow_anonymous decides, but a thing's key is not up for grabs. */
		if(credentials_has_thing(&plugin->credentials, client_id)) {
			mosquitto_log_printf(MOSQ_LOG_NOTICE,
					LOG_PREFIX "refused anonymous client %s: that id is a registered thing key",
					client_id);
			return MOSQ_ERR_AUTH;
		}
		verdict = MOSQ_ERR_PLUGIN_DEFER;
	}else if(strcmp(username, plugin->gateway_username) == 0) {
		verdict = MOSQ_ERR_PLUGIN_DEFER; /* the password_file decides */
	}else{
		/* A thing: its key as username, an app token of its org as password. */
		app = username[0] ? credentials_find_app(&plugin->credentials, ed->password) : NULL;
		if(app == NULL) {
			mosquitto_log_printf(MOSQ_LOG_NOTICE,
					LOG_PREFIX "refused client %s (thing %s): not a valid app token", client_id,
					username);
			return MOSQ_ERR_AUTH;
		}
		verdict = MOSQ_ERR_SUCCESS;
	}

	if(client_id_is_held(plugin, client_id, username, app)) {
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				LOG_PREFIX "refused client %s: that id is held by an authenticated connection",
				client_id);
		return MOSQ_ERR_AUTH;
	}
	/* Remembered even when deferring: if the password_file refuses after all, the broker still
	 * sends MOSQ_EVT_DISCONNECT for this client, which forgets it again. */
	rc = remember_connection(plugin, ed->client, client_id, username, app);
	return rc == MOSQ_ERR_SUCCESS ? verdict : rc;
}

/* ---------------------------------------------------------------------------------------------
 * MOSQ_EVT_ACL_CHECK
 * ------------------------------------------------------------------------------------------ */

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct plugin *plugin = userdata;
	struct mosquitto_evt_acl_check *ed = event_data;
	struct connection *connection;

	(void)event;
	if(ed->access != MOSQ_ACL_WRITE || !is_request_topic(ed->topic)) {
		return MOSQ_ERR_PLUGIN_DEFER; /* reading and subscribing: the acl_file's business */
	}
	connection = table_find(&plugin->connections, ed->client);
	if(connection == NULL) {
		/* A write check after MOSQ_EVT_DISCONNECT is a Last Will being published. It would
		 * reach the gateway without passing on_message, so without its header, or with one
		 * the client wrote itself: refused. */
		return MOSQ_ERR_ACL_DENIED;
	}
	/* A thing sends on api/... and on_message moves the message into its namespace. */
	return connection->is_thing ? MOSQ_ERR_SUCCESS : MOSQ_ERR_PLUGIN_DEFER;
}

/* ---------------------------------------------------------------------------------------------
 * MOSQ_EVT_MESSAGE: an incoming PUBLISH
 * ------------------------------------------------------------------------------------------ */

/* The value of the first user property called `name`, in mosquitto_malloc'ed memory, or NULL. */
static char *user_property(const mosquitto_property *list, const char *name)
{
	for(const mosquitto_property *node = list; node; node = mosquitto_property_next(node)) {
		char *key = NULL, *value = NULL;
		if(mosquitto_property_identifier(node) != MQTT_PROP_USER_PROPERTY) continue;
		if(mosquitto_property_read_string_pair(node, MQTT_PROP_USER_PROPERTY, &key, &value, false)
				== NULL) {
			continue;
		}
		if(strcmp(key, name) == 0) {
			mosquitto_free(key);
			return value;
		}
		mosquitto_free(key);
		mosquitto_free(value);
	}
	return NULL;
}

/* Where a thing's request goes (broker/README.md): into its namespace, whatever it sent,
 *     api -> api/<cid>,   api/<rest> -> api/<cid>/<rest>,   and the same for apiz.
 * Its reply comes back on reply/<cid>[/<rest>], which gateway_message turns into the
 * reply[/<rest>] the device expects. NULL when out of memory or too long. */
static char *thing_topic(const char *client_id, const char *topic)
{
	const char *prefix = strncmp(topic, "apiz", 4) == 0 ? "apiz" : "api";
	const char *rest = topic + strlen(prefix); /* "" or "/..." */
	size_t length = strlen(prefix) + 1 + strlen(client_id) + strlen(rest);
	char *new_topic;

	if(length > MAX_TOPIC_LEN) return NULL;
	new_topic = mosquitto_malloc(length + 1);
	if(new_topic == NULL) return NULL;
	snprintf(new_topic, length + 1, "%s/%s%s", prefix, client_id, rest);
	return new_topic;
}

/* A message from a device (a thing or an anonymous client): stamp, and for a thing move. */
static int device_message(struct connection *connection, struct mosquitto_evt_message *ed)
{
	char *new_topic = NULL;
	unsigned char *payload;

	if(connection->is_thing) {
		if(!is_request_topic(ed->topic)) return MOSQ_ERR_ACL_DENIED; /* never granted anyway */
		new_topic = thing_topic(connection->client_id, ed->topic);
		if(new_topic == NULL) return MOSQ_ERR_ACL_DENIED;
	}
	/* Who sent it, in front of the payload rather than in a user property: the gateway's MQTT
	 * client decodes properties in Python, at a cost per message (broker/README.md). */
	if((size_t)ed->payloadlen + connection->header_len > UINT32_MAX) {
		mosquitto_free(new_topic);
		return MOSQ_ERR_ACL_DENIED;
	}
	/* One byte more, a NUL, as Mosquitto stores every payload. */
	payload = mosquitto_malloc(connection->header_len + ed->payloadlen + 1);
	if(payload == NULL) {
		mosquitto_free(new_topic);
		return MOSQ_ERR_ACL_DENIED; /* better lost than delivered without its identity */
	}
	memcpy(payload, connection->header, connection->header_len);
	if(ed->payloadlen > 0) {
		memcpy(payload + connection->header_len, ed->payload, ed->payloadlen);
	}
	payload[connection->header_len + ed->payloadlen] = '\0';

	/* The message now owns the new topic and payload. Mosquitto 2.0 frees a replaced payload
	 * itself, but not a replaced topic (plugin__handle_message). */
	if(new_topic != NULL) {
		mosquitto_free(ed->topic);
		ed->topic = new_topic;
	}
	ed->payload = payload;
	ed->payloadlen += (uint32_t)connection->header_len;
	return MOSQ_ERR_SUCCESS;
}

/* Whether a thing authenticated at CONNECT holds the client id made of the first `length`
 * bytes of `client_id`. */
static bool thing_holds(const struct plugin *plugin, const char *client_id, size_t length)
{
	const struct connection_table *table = &plugin->connections;
	uint64_t hash = 14695981039346656037ULL; /* hash_string of those bytes alone */
	struct connection *holder;

	for(size_t i = 0; i < length; i++) {
		hash ^= (unsigned char)client_id[i];
		hash *= 1099511628211ULL;
	}
	for(holder = table->by_id[hash & (table->bucket_count - 1)]; holder != NULL;
			holder = holder->next_by_id) {
		if(holder->is_thing && strncmp(holder->client_id, client_id, length) == 0
				&& holder->client_id[length] == '\0') {
			return true;
		}
	}
	return false;
}

/* Deliver a copy of a gateway message to one client alone, on `topic`, whether it subscribed
 * or not, with the original's Correlation Data if any. */
static void deliver(struct mosquitto_evt_message *ed, const char *client_id, const char *topic)
{
	mosquitto_property *properties = NULL;
	void *correlation = NULL;
	uint16_t correlation_len = 0;
	int rc;

	if(mosquitto_property_read_binary(ed->properties, MQTT_PROP_CORRELATION_DATA, &correlation,
				&correlation_len, false) != NULL) {
		mosquitto_property_add_binary(&properties, MQTT_PROP_CORRELATION_DATA, correlation,
				correlation_len);
		mosquitto_free(correlation);
	}
	/* The broker owns `properties` on success. */
	rc = mosquitto_broker_publish_copy(client_id, topic, (int)ed->payloadlen, ed->payload,
			ed->qos, false, properties);
	if(rc != MOSQ_ERR_SUCCESS) {
		mosquitto_property_free_all(&properties);
		mosquitto_log_printf(MOSQ_LOG_WARNING,
				LOG_PREFIX "could not deliver a reply to %s on %s (%s)", client_id, topic,
				mosquitto_strerror(rc));
	}
}

/* A message from the gateway: a reply for a thing is delivered to it alone. Two cases:
 *   - `tr50gw-deliver` = <client id>/<topic> (a v5 Response Topic the thing asked for): to that
 *     client on that topic;
 *   - reply/<cid>[/<rest>] (or replyz/) where <cid> is held by a thing authenticated at
 *     CONNECT: to that client on reply[/<rest>], the topic it published on with api moved back
 *     out of its namespace (thing_topic).
 * In both the original is refused, so no subscriber of reply/# ever sees it. Anything else
 * passes as it is. */
static int gateway_message(struct plugin *plugin, struct mosquitto_evt_message *ed)
{
	char *wanted = user_property(ed->properties, DELIVER_PROPERTY);
	const char *prefix, *client_id, *rest;
	char *topic, *holder;

	if(wanted != NULL) {
		char *slash = strchr(wanted, FIELD_SEPARATOR);
		if(slash == NULL || slash == wanted || slash[1] == '\0') {
			mosquitto_log_printf(MOSQ_LOG_WARNING,
					LOG_PREFIX "gateway message on %s: %s is not <client id>/<topic>; refused",
					ed->topic, DELIVER_PROPERTY);
		}else{
			*slash = '\0';
			deliver(ed, wanted, slash + 1);
		}
		mosquitto_free(wanted);
		return MOSQ_ERR_ACL_DENIED;
	}

	if(strncmp(ed->topic, "reply/", 6) == 0) {
		prefix = "reply";
	}else if(strncmp(ed->topic, "replyz/", 7) == 0) {
		prefix = "replyz";
	}else{
		return MOSQ_ERR_SUCCESS;
	}
	client_id = ed->topic + strlen(prefix) + 1;
	rest = strchr(client_id, '/');
	if(rest == NULL) rest = client_id + strlen(client_id);
	if(!thing_holds(plugin, client_id, (size_t)(rest - client_id))) return MOSQ_ERR_SUCCESS;

	topic = concat(prefix, rest);
	holder = mosquitto_malloc((size_t)(rest - client_id) + 1);
	if(topic != NULL && holder != NULL) {
		memcpy(holder, client_id, (size_t)(rest - client_id));
		holder[rest - client_id] = '\0';
		deliver(ed, holder, topic);
	}
	mosquitto_free(holder);
	mosquitto_free(topic);
	return MOSQ_ERR_ACL_DENIED;
}

static int on_message(int event, void *event_data, void *userdata)
{
	struct plugin *plugin = userdata;
	struct mosquitto_evt_message *ed = event_data;
	const char *username = mosquitto_client_username(ed->client);
	struct connection *connection;

	(void)event;
	if(username != NULL && strcmp(username, plugin->gateway_username) == 0) {
		return gateway_message(plugin, ed); /* its own properties are left as they are */
	}
	connection = table_find(&plugin->connections, ed->client);
	if(connection == NULL) {
		/* Cannot happen (every CONNECT is remembered); never pass a message without identity. */
		mosquitto_log_printf(MOSQ_LOG_WARNING,
				LOG_PREFIX "message from unknown connection %s refused", mosquitto_client_id(ed->client));
		return MOSQ_ERR_ACL_DENIED;
	}
	return device_message(connection, ed);
}

/* ---------------------------------------------------------------------------------------------
 * MOSQ_EVT_DISCONNECT and MOSQ_EVT_TICK
 * ------------------------------------------------------------------------------------------ */

static int on_disconnect(int event, void *event_data, void *userdata)
{
	struct plugin *plugin = userdata;
	struct mosquitto_evt_disconnect *ed = event_data;

	(void)event;
	connection_free(table_remove(&plugin->connections, ed->client));
	return MOSQ_ERR_SUCCESS;
}

/* Notice a changed credentials file (a revoked token) even when nobody connects. */
static int on_tick(int event, void *event_data, void *userdata)
{
	struct plugin *plugin = userdata;
	struct timespec now;

	(void)event;
	(void)event_data;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if(seconds_between(&plugin->last_tick_check, &now) < 1.0) return MOSQ_ERR_SUCCESS;
	plugin->last_tick_check = now;
	credentials_refresh(plugin, false);
	return MOSQ_ERR_SUCCESS;
}

/* ---------------------------------------------------------------------------------------------
 * The plugin's entry points
 * ------------------------------------------------------------------------------------------ */

struct registration {
	int event;
	MOSQ_FUNC_generic_callback callback;
};

static const struct registration registrations[] = {
	{MOSQ_EVT_BASIC_AUTH, on_basic_auth},
	{MOSQ_EVT_ACL_CHECK, on_acl_check},
	{MOSQ_EVT_MESSAGE, on_message},
	{MOSQ_EVT_DISCONNECT, on_disconnect},
	{MOSQ_EVT_TICK, on_tick},
};
#define REGISTRATION_COUNT (sizeof(registrations) / sizeof(registrations[0]))

static void plugin_free(struct plugin *plugin)
{
	if(plugin == NULL) return;
	credentials_free(&plugin->credentials);
	table_free(&plugin->connections);
	mosquitto_free(plugin->credentials_path);
	mosquitto_free(plugin->gateway_username);
	mosquitto_free(plugin);
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++) {
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	struct plugin *plugin = mosquitto_calloc(1, sizeof(*plugin));
	const char *credentials_path = NULL;
	const char *gateway_username = "tr50gw";
	unsigned char boot[8];

	if(plugin == NULL) return MOSQ_ERR_NOMEM;
	for(int i = 0; i < option_count; i++) {
		if(strcmp(options[i].key, "credentials") == 0) credentials_path = options[i].value;
		if(strcmp(options[i].key, "gateway_username") == 0) gateway_username = options[i].value;
	}
	if(credentials_path == NULL) {
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "plugin_opt_credentials is required");
		mosquitto_free(plugin);
		return MOSQ_ERR_INVAL;
	}
	if(RAND_bytes(boot, sizeof(boot)) != 1) {
		mosquitto_free(plugin);
		return MOSQ_ERR_UNKNOWN;
	}
	for(size_t i = 0; i < sizeof(boot); i++) {
		snprintf(plugin->boot_id + 2 * i, 3, "%02x", boot[i]);
	}
	plugin->identifier = identifier;
	plugin->credentials_path = mosquitto_strdup(credentials_path);
	plugin->gateway_username = mosquitto_strdup(gateway_username);
	if(plugin->credentials_path == NULL || plugin->gateway_username == NULL
			|| table_init(&plugin->connections, INITIAL_BUCKETS)) {
		plugin_free(plugin);
		return MOSQ_ERR_NOMEM;
	}
	credentials_refresh(plugin, true);
	clock_gettime(CLOCK_MONOTONIC, &plugin->last_tick_check);

	for(size_t i = 0; i < REGISTRATION_COUNT; i++) {
		int rc = mosquitto_callback_register(identifier, registrations[i].event,
				registrations[i].callback, NULL, plugin);
		if(rc != MOSQ_ERR_SUCCESS) {
			while(i-- > 0) {
				mosquitto_callback_unregister(identifier, registrations[i].event,
						registrations[i].callback, NULL);
			}
			plugin_free(plugin);
			return rc;
		}
	}
	*userdata = plugin;
	mosquitto_log_printf(MOSQ_LOG_INFO, LOG_PREFIX "loaded; gateway account %s",
			plugin->gateway_username);
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	struct plugin *plugin = userdata;

	(void)options;
	(void)option_count;
	if(plugin == NULL) return MOSQ_ERR_SUCCESS;
	for(size_t i = 0; i < REGISTRATION_COUNT; i++) {
		mosquitto_callback_unregister(plugin->identifier, registrations[i].event,
				registrations[i].callback, NULL);
	}
	plugin_free(plugin);
	return MOSQ_ERR_SUCCESS;
}
