/**
 * Sizes of gRPC messages, shared by the server (what it accepts and sends)
 * and the client (what it sends and accepts), so that both refuse the same
 * messages and a client never sends what the server would drop.
 *
 * Requests: the largest legitimate one is a dict put of a 64 MiB value with
 * its key (64 KiB); every other request is far smaller (PutBlob sends 1 MiB
 * frames, queue items are 1 MiB, session batches 4 MiB). The server enforces
 * this bound from each message's 5-byte length prefix, before reading the
 * message; smaller bounds per method (src/server/method-limits.ts) apply once
 * a message is read, before it is decoded.
 */
const MiB = 1024 * 1024;

/** Largest request message, in bytes. */
export const MAX_REQUEST_BYTES = 65 * MiB;

/** Largest response message, in bytes (a dict getMany of large values is the big one). */
export const MAX_RESPONSE_BYTES = 256 * MiB;
