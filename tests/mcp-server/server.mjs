// Minimal MCP streamable-HTTP server used as a backend by the
// mcp-oauth-proxy integration tests.
//
//   node server.mjs --port <p>      (or PORT=<p>; 0 / unset = any free port)
//
// Listens on 127.0.0.1 only and prints exactly one line `LISTENING <port>` to
// stdout once ready. Everything else goes to stderr.
//
// Endpoint: /mcp  (POST = JSON-RPC, GET = standalone SSE stream, DELETE = end session)
// Stateful: one StreamableHTTPServerTransport + one McpServer per session,
// keyed by the Mcp-Session-Id header.

import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import * as z from 'zod';

const MAX_BODY_BYTES = 4 * 1024 * 1024;

function log(...args) {
    console.error('[mcp-test-server]', ...args);
}

// ---------------------------------------------------------------- arguments

function parsePort(argv, env) {
    let raw;
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        if (a === '--port' || a === '-p') {
            raw = argv[++i];
        } else if (a.startsWith('--port=')) {
            raw = a.slice('--port='.length);
        } else if (a === '--help' || a === '-h') {
            console.error('usage: node server.mjs [--port <port>]   (env PORT also accepted; 0 = pick a free port)');
            process.exit(0);
        } else {
            console.error(`unknown argument: ${a}`);
            process.exit(2);
        }
    }
    if (raw === undefined) raw = env.PORT;
    if (raw === undefined || raw === '') return 0;
    const port = Number(raw);
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
        console.error(`invalid port: ${raw}`);
        process.exit(2);
    }
    return port;
}

// ---------------------------------------------------------------- MCP server

function sleep(ms) {
    return new Promise(resolve => setTimeout(resolve, ms));
}

function headerOrNull(headers, name) {
    // requestInfo.headers comes from a Web `Headers` object: keys are lower-case,
    // repeated headers are joined with ", ".
    if (!headers) return null;
    const v = headers[name];
    if (v === undefined || v === null) return null;
    return Array.isArray(v) ? v.join(', ') : String(v);
}

function createMcpServer() {
    const server = new McpServer(
        { name: 'mcp-oauth-proxy-test-server', version: '0.0.0' },
        { capabilities: { logging: {} } }
    );

    server.registerTool(
        'echo',
        {
            description: 'Echoes the given text back as "echo: <text>".',
            inputSchema: { text: z.string() }
        },
        async ({ text }) => ({
            content: [{ type: 'text', text: `echo: ${text}` }]
        })
    );

    server.registerTool(
        'whoami',
        {
            description:
                'Returns JSON {"authorization": <raw Authorization header or null>, "cookie": <raw Cookie header or null>} ' +
                'of the HTTP request that carried this tools/call.',
            inputSchema: {}
        },
        async (_args, extra) => {
            const headers = extra?.requestInfo?.headers;
            const body = {
                authorization: headerOrNull(headers, 'authorization'),
                cookie: headerOrNull(headers, 'cookie')
            };
            return { content: [{ type: 'text', text: JSON.stringify(body) }] };
        }
    );

    server.registerTool(
        'stream_events',
        {
            description:
                'Sends <count> notifications/message (level info, data "event <i>") on this request\'s SSE stream, ' +
                '<interval_ms> apart, then returns "sent <count> events".',
            inputSchema: {
                count: z.number().int().min(0).max(10000).default(5),
                interval_ms: z.number().int().min(0).max(600000).default(300)
            }
        },
        async ({ count, interval_ms }, extra) => {
            for (let i = 1; i <= count; i++) {
                if (i > 1 && interval_ms > 0) await sleep(interval_ms);
                if (extra.signal?.aborted) break;
                await extra.sendNotification({
                    method: 'notifications/message',
                    params: { level: 'info', logger: 'stream_events', data: `event ${i}` }
                });
            }
            return { content: [{ type: 'text', text: `sent ${count} events` }] };
        }
    );

    return server;
}

// ---------------------------------------------------------------- HTTP glue

/** sessionId -> { transport, server } */
const sessions = new Map();

function sendJsonRpcError(res, status, code, message) {
    if (res.headersSent) {
        res.end();
        return;
    }
    res.writeHead(status, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ jsonrpc: '2.0', error: { code, message }, id: null }));
}

function readBody(req) {
    return new Promise((resolve, reject) => {
        const chunks = [];
        let size = 0;
        req.on('data', chunk => {
            size += chunk.length;
            if (size > MAX_BODY_BYTES) {
                reject(Object.assign(new Error('body too large'), { tooLarge: true }));
                req.destroy();
                return;
            }
            chunks.push(chunk);
        });
        req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
        req.on('error', reject);
    });
}

function sessionHeader(req) {
    const v = req.headers['mcp-session-id'];
    return Array.isArray(v) ? v[0] : v;
}

async function handleMcp(req, res) {
    const sessionId = sessionHeader(req);

    if (req.method === 'POST') {
        let text;
        try {
            text = await readBody(req);
        } catch (err) {
            if (err.tooLarge) return sendJsonRpcError(res, 413, -32000, 'Payload too large');
            return sendJsonRpcError(res, 400, -32700, 'Parse error: could not read body');
        }
        let body;
        try {
            body = JSON.parse(text);
        } catch {
            return sendJsonRpcError(res, 400, -32700, 'Parse error: Invalid JSON');
        }

        if (sessionId) {
            const entry = sessions.get(sessionId);
            if (!entry) return sendJsonRpcError(res, 404, -32001, 'Session not found');
            return entry.transport.handleRequest(req, res, body);
        }

        const isInit = Array.isArray(body) ? body.some(isInitializeRequest) : isInitializeRequest(body);
        if (!isInit) {
            return sendJsonRpcError(res, 400, -32000, 'Bad Request: Mcp-Session-Id header is required');
        }

        const server = createMcpServer();
        const transport = new StreamableHTTPServerTransport({
            sessionIdGenerator: () => randomUUID(),
            enableJsonResponse: false,
            onsessioninitialized: id => {
                sessions.set(id, { transport, server });
                log(`session initialized ${id}`);
            }
        });
        // Must be set before connect(): Protocol.connect() wraps the existing onclose.
        transport.onclose = () => {
            const id = transport.sessionId;
            if (id && sessions.get(id)?.transport === transport) {
                sessions.delete(id);
                log(`session closed ${id}`);
            }
        };
        transport.onerror = err => log('transport error:', err?.message ?? err);
        await server.connect(transport);
        return transport.handleRequest(req, res, body);
    }

    if (req.method === 'GET' || req.method === 'DELETE') {
        if (!sessionId) return sendJsonRpcError(res, 400, -32000, 'Bad Request: Mcp-Session-Id header is required');
        const entry = sessions.get(sessionId);
        if (!entry) return sendJsonRpcError(res, 404, -32001, 'Session not found');
        return entry.transport.handleRequest(req, res);
    }

    res.setHeader('Allow', 'GET, POST, DELETE');
    return sendJsonRpcError(res, 405, -32000, 'Method not allowed.');
}

const httpServer = http.createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
    if (path !== '/mcp') {
        res.writeHead(404, { 'Content-Type': 'text/plain' });
        res.end('not found\n');
        return;
    }
    handleMcp(req, res).catch(err => {
        log('error handling request:', err?.stack ?? err);
        sendJsonRpcError(res, 500, -32603, 'Internal server error');
    });
});

// ---------------------------------------------------------------- lifecycle

let shuttingDown = false;
async function shutdown(signal) {
    if (shuttingDown) return;
    shuttingDown = true;
    log(`received ${signal}, shutting down`);
    const force = setTimeout(() => process.exit(0), 2000);
    force.unref();
    httpServer.close();
    for (const { transport, server } of sessions.values()) {
        try {
            await server.close();
        } catch {
            /* ignore */
        }
        try {
            await transport.close();
        } catch {
            /* ignore */
        }
    }
    sessions.clear();
    httpServer.closeAllConnections?.();
    process.exit(0);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

const port = parsePort(process.argv.slice(2), process.env);
httpServer.on('error', err => {
    console.error(`listen error: ${err.message}`);
    process.exit(1);
});
httpServer.listen(port, '127.0.0.1', () => {
    const actual = httpServer.address().port;
    process.stdout.write(`LISTENING ${actual}\n`);
});
