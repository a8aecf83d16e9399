// The MCP server of the SDK's 2.x generation behind the third proxy:
// `@modelcontextprotocol/server` (`McpServer` from a per-request factory,
// served by `createMcpHandler`: protocol 2026-07-28, with the stateless 2025
// fallback) on a loopback port, run in-process on node:http.
//
// Tools:
//   whoami   as in mcp-server.mjs: calls the upstream userinfo endpoint with
//            the bearer this request carried; returns {sub, userinfo_status,
//            userinfo_error, bearer}.
//   lookup   one argument, `region`, declared with `x-mcp-header: Region`
//            (SEP-2243), so a 2026-07-28 client sends it again as the
//            `Mcp-Param-Region` header. The SDK's HTTP entry refuses a
//            tools/call whose header is missing or disagrees with the body
//            (400, -32020) before the tool runs; the tool returns
//            {region, mcp_param_region, mcp_method, mcp_name, protocol_version}
//            as the HTTP request that reached this server carried them.
//   read_notes  the notes written so far: {notes: [text, ...]} (a read tool).
//   write_note  one argument, `text`; appends it to the server's notebook
//               and returns {written, count} (a write tool: scenario 11
//               configures the proxy so that `write_*` needs `mcp:write`).
//
// `received` lists the headers of every request that reached the server;
// `notes` the notes written (text, the Authorization header that came with
// the call, time).

import http from 'node:http';
import { McpServer, createMcpHandler } from '@modelcontextprotocol/server';
import * as z from 'zod';
import { closeServer, listenOnLoopback, readBody, whoamiAnswer } from './mcp-server.mjs';

export const PARAM_HEADER = 'Region';

/**
 * One server instance per request; `request` is the web Request it serves,
 * `notes` the server's notebook (shared by every request).
 */
function buildServer(userinfoUrl, request, notes) {
    const header = name => request?.headers.get(name) ?? null;
    const server = new McpServer({ name: 'e2e-v2-server', version: '2.0.0' });
    server.registerTool(
        'whoami',
        {
            description:
                'Calls the upstream userinfo endpoint with the bearer token this request carried ' +
                'and returns the subject, plus the raw bearer received.'
        },
        async () => whoamiAnswer(userinfoUrl, header('authorization'))
    );
    server.registerTool(
        'lookup',
        {
            description: 'Looks a region up; the region travels in the Mcp-Param-Region header too.',
            inputSchema: z.object({
                region: z.string().meta({ 'x-mcp-header': PARAM_HEADER, description: 'A region name' })
            })
        },
        async ({ region }) => {
            const seen = {
                region,
                mcp_param_region: header(`mcp-param-${PARAM_HEADER.toLowerCase()}`),
                mcp_method: header('mcp-method'),
                mcp_name: header('mcp-name'),
                protocol_version: header('mcp-protocol-version')
            };
            return { content: [{ type: 'text', text: JSON.stringify(seen) }] };
        }
    );
    server.registerTool(
        'read_notes',
        { description: 'Lists the notes written so far (a read tool).' },
        async () => ({ content: [{ type: 'text', text: JSON.stringify({ notes: notes.map(n => n.text) }) }] })
    );
    server.registerTool(
        'write_note',
        {
            description: 'Adds a note to the notebook (a write tool).',
            inputSchema: z.object({ text: z.string().max(200).describe('The note') })
        },
        async ({ text }) => {
            notes.push({ text, authorization: header('authorization'), at: Date.now() });
            return { content: [{ type: 'text', text: JSON.stringify({ written: text, count: notes.length }) }] };
        }
    );
    return server;
}

/** Starts the server on 127.0.0.1:<port> (0 = any free port). */
export async function startMcpServerV2({ port = 0, userinfoUrl }) {
    const received = [];
    const notes = [];
    const handler = createMcpHandler(({ requestInfo }) => buildServer(userinfoUrl, requestInfo, notes), {
        // One JSON answer per request: nothing here streams.
        responseMode: 'json',
        onerror: e => console.error(`[mcp-server-v2] ${e?.message || e}`)
    });
    const httpServer = http.createServer(async (req, res) => {
        const url = new URL(req.url || '/', 'http://127.0.0.1');
        if (url.pathname !== '/mcp') {
            res.writeHead(404).end();
            return;
        }
        const h = name => req.headers[name] ?? null;
        const entry = {
            method: req.method,
            authorization: h('authorization'),
            protocol_version: h('mcp-protocol-version'),
            mcp_method: h('mcp-method'),
            mcp_name: h('mcp-name'),
            mcp_param_region: h(`mcp-param-${PARAM_HEADER.toLowerCase()}`),
            status: null,
            at: Date.now()
        };
        received.push(entry);
        try {
            const body = req.method === 'GET' || req.method === 'HEAD' ? undefined : await readBody(req);
            const headers = new Headers();
            for (const [name, value] of Object.entries(req.headers)) {
                if (Array.isArray(value)) for (const v of value) headers.append(name, v);
                else if (value !== undefined) headers.set(name, value);
            }
            const request = new Request(`http://${req.headers.host || '127.0.0.1'}${req.url}`, {
                method: req.method,
                headers,
                body
            });
            const response = await handler.fetch(request);
            entry.status = response.status;
            const out = {};
            response.headers.forEach((value, name) => {
                out[name] = value;
            });
            res.writeHead(response.status, out);
            res.end(Buffer.from(await response.arrayBuffer()));
        } catch (e) {
            console.error('[mcp-server-v2] error handling request:', e);
            if (!res.headersSent) {
                res.writeHead(500, { 'content-type': 'application/json' });
                res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32603, message: 'Internal error' }, id: null }));
            }
        }
    });
    const actualPort = await listenOnLoopback(httpServer, port);
    return {
        port: actualPort,
        url: `http://127.0.0.1:${actualPort}/mcp`,
        received,
        notes,
        async close() {
            await handler.close().catch(() => {});
            await closeServer(httpServer);
        }
    };
}
