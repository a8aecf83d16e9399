// The MCP server behind the proxy: the official TypeScript SDK's McpServer on
// a streamable HTTP transport (stateless: one server + transport per POST),
// on a loopback port, run in-process.
//
// Tool `whoami`: calls the upstream's userinfo endpoint with the
// Authorization header this request arrived with and returns
//   {"sub": <subject or null>, "userinfo_status": <HTTP status>,
//    "userinfo_error": <body when not 200>, "bearer": <the raw bearer received>}
// so the suite can check that a real upstream token reached the server (swap
// mode), that the proxy's own JWT did not, and that in pass-through mode the
// client's token arrived unchanged.

import http from 'node:http';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';

const MAX_BODY_BYTES = 1024 * 1024;

function bearerOf(authorization) {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization || '');
    return m ? m[1] : null;
}

/**
 * The `whoami` tool's answer (this server's and mcp-server-v2.mjs's): the
 * upstream userinfo endpoint called with `authorization` (the header the
 * request arrived with, or null).
 */
export async function whoamiAnswer(userinfoUrl, authorization) {
    const result = { sub: null, userinfo_status: null, userinfo_error: null, bearer: bearerOf(authorization) };
    try {
        const res = await fetch(userinfoUrl, {
            headers: authorization ? { authorization } : {},
            signal: AbortSignal.timeout(5000)
        });
        const text = await res.text();
        result.userinfo_status = res.status;
        if (res.ok) {
            result.sub = JSON.parse(text).sub ?? null;
        } else {
            result.userinfo_error = `${res.headers.get('www-authenticate') || ''} ${text}`.trim().slice(0, 300);
        }
    } catch (e) {
        result.userinfo_error = String(e?.message || e);
    }
    return {
        content: [{ type: 'text', text: JSON.stringify(result) }],
        isError: result.sub === null
    };
}

function buildServer(userinfoUrl) {
    const server = new McpServer({ name: 'e2e-whoami-server', version: '1.0.0' });
    server.registerTool(
        'whoami',
        {
            description:
                'Calls the upstream userinfo endpoint with the bearer token this request carried ' +
                'and returns the subject, plus the raw bearer received.',
            inputSchema: {}
        },
        async (_args, extra) => {
            const headers = extra?.requestInfo?.headers || {};
            const raw = headers.authorization;
            const authorization = Array.isArray(raw) ? raw.join(', ') : raw || null;
            return whoamiAnswer(userinfoUrl, authorization);
        }
    );
    return server;
}

/** The request body (at most MAX_BODY_BYTES), as a Buffer. */
export function readBody(req) {
    return new Promise((resolve, reject) => {
        const chunks = [];
        let size = 0;
        req.on('data', c => {
            size += c.length;
            if (size > MAX_BODY_BYTES) {
                reject(new Error('body too large'));
                req.destroy();
                return;
            }
            chunks.push(c);
        });
        req.on('end', () => resolve(Buffer.concat(chunks)));
        req.on('error', reject);
    });
}

/** Listens on 127.0.0.1:<port> (0 = any free port); answers the port. */
export async function listenOnLoopback(httpServer, port) {
    await new Promise((resolve, reject) => {
        httpServer.once('error', reject);
        httpServer.listen(port, '127.0.0.1', resolve);
    });
    return httpServer.address().port;
}

/** Closes a server started with listenOnLoopback, open connections too. */
export async function closeServer(httpServer) {
    httpServer.closeAllConnections?.();
    await new Promise(resolve => httpServer.close(() => resolve()));
}

function jsonRpcError(res, status, message) {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32000, message }, id: null }));
}

/**
 * Starts the MCP server on 127.0.0.1:<port> (0 = any free port).
 * `received` lists the Authorization header of every request that reached it.
 */
export async function startMcpServer({ port = 0, userinfoUrl }) {
    const received = [];
    const httpServer = http.createServer(async (req, res) => {
        const path = new URL(req.url || '/', 'http://127.0.0.1').pathname;
        if (path !== '/mcp') {
            res.writeHead(404).end();
            return;
        }
        received.push({ method: req.method, authorization: req.headers.authorization ?? null, at: Date.now() });
        if (req.method !== 'POST') {
            // Stateless server: no standalone SSE stream, no sessions to end.
            res.setHeader('allow', 'POST');
            jsonRpcError(res, 405, 'Method not allowed.');
            return;
        }
        let body;
        try {
            body = JSON.parse((await readBody(req)).toString('utf8'));
        } catch (e) {
            jsonRpcError(res, 400, `Parse error: ${e.message}`);
            return;
        }
        const server = buildServer(userinfoUrl);
        const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
        res.on('close', () => {
            transport.close().catch(() => {});
            server.close().catch(() => {});
        });
        try {
            await server.connect(transport);
            await transport.handleRequest(req, res, body);
        } catch (e) {
            console.error('[mcp-server] error handling request:', e);
            if (!res.headersSent) jsonRpcError(res, 500, 'Internal server error');
        }
    });
    const actualPort = await listenOnLoopback(httpServer, port);
    return {
        port: actualPort,
        url: `http://127.0.0.1:${actualPort}/mcp`,
        received,
        close: () => closeServer(httpServer)
    };
}
