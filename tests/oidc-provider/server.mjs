// A real OpenID provider for latchkey's OIDC tests: panva's oidc-provider (OpenID Certified),
// on 127.0.0.1 at a free port, with one confidential client. tests/api/helpers/oidc.rs starts
// it, reads the first line of stdout ("listening <port>"), and kills it at the end of the test.
//
// Environment: CLIENT_ID, CLIENT_SECRET, REDIRECT_URI.
//
// The login and consent steps have no form: the next interaction signs in the account last set
// with POST /test/login and grants what was asked. Two more controls make the provider misbehave
// the way a test needs, with real signatures:
// - POST /test/tamper {claims, key}: the next ID token gets these claims merged in (null removes
//   one), signed with `key`: "k1" (the published key), "k2" (unpublished until /test/publish) or
//   "stranger" (never published);
// - POST /test/publish {kid: "k2"}: the JWKS lists k2 from now on (a key rotation).
import http from 'node:http';
import Provider from 'oidc-provider';
import { generateKeyPair, exportJWK, SignJWT, decodeJwt } from 'jose';

const { CLIENT_ID, CLIENT_SECRET, REDIRECT_URI } = process.env;
if (!CLIENT_ID || !CLIENT_SECRET || !REDIRECT_URI) {
  console.error('CLIENT_ID, CLIENT_SECRET and REDIRECT_URI are required');
  process.exit(2);
}

async function rsaKey(kid) {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = await exportJWK(privateKey);
  return { kid, privateKey, jwk: { ...jwk, kid, alg: 'RS256', use: 'sig' } };
}

function publicJwk({ jwk }) {
  const { kty, n, e, kid, alg, use } = jwk;
  return { kty, n, e, kid, alg, use };
}

const keys = {
  k1: await rsaKey('k1'),
  k2: await rsaKey('k2'),
  stranger: await rsaKey('stranger'),
};
const accounts = new Map();
let next = null;
let tamper = null;
const published = new Set();

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      redirect_uris: [REDIRECT_URI],
      response_types: ['code'],
      grant_types: ['authorization_code'],
    },
  ],
  jwks: { keys: [keys.k1.jwk] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  // The scopes' claims in the ID token itself (as Google, Microsoft and Keycloak do), not only
  // at the userinfo endpoint.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  cookies: { keys: ['latchkey-test-provider'] },
  async findAccount(ctx, sub) {
    const account = accounts.get(sub);
    if (!account) return undefined;
    return { accountId: sub, async claims() { return { sub, ...account }; } };
  },
});

async function resign(idToken) {
  const claims = { ...decodeJwt(idToken) };
  for (const [name, value] of Object.entries(tamper.claims ?? {})) {
    if (value === null) delete claims[name];
    else claims[name] = value;
  }
  const key = keys[tamper.key ?? 'k1'];
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'RS256', kid: key.kid })
    .sign(key.privateKey);
}

provider.use(async (ctx, nextMiddleware) => {
  await nextMiddleware();
  if (ctx.path === '/token' && tamper && ctx.body?.id_token) {
    ctx.body = { ...ctx.body, id_token: await resign(ctx.body.id_token) };
    tamper = null;
  }
  if (ctx.path === '/jwks' && ctx.body?.keys) {
    const extra = [...published].map((kid) => publicJwk(keys[kid]));
    ctx.body = { keys: [...ctx.body.keys, ...extra] };
  }
});

async function readJson(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return JSON.parse(body || '{}');
}

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  if (details.prompt.name === 'login') {
    if (!next) {
      res.writeHead(409).end('POST /test/login first');
      return;
    }
    const result = { login: { accountId: next.sub } };
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
    return;
  }
  const grant = new provider.Grant({
    accountId: details.session.accountId,
    clientId: details.params.client_id,
  });
  grant.addOIDCScope(details.params.scope);
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

const callback = provider.callback();
server.on('request', async (req, res) => {
  try {
    const path = new URL(req.url, issuer).pathname;
    if (path.startsWith('/interaction/')) return await interaction(req, res);
    if (req.method === 'POST' && path === '/test/login') {
      const { sub, ...claims } = await readJson(req);
      accounts.set(sub, claims);
      next = { sub };
      return res.writeHead(204).end();
    }
    if (req.method === 'POST' && path === '/test/tamper') {
      tamper = await readJson(req);
      return res.writeHead(204).end();
    }
    if (req.method === 'POST' && path === '/test/publish') {
      published.add((await readJson(req)).kid);
      return res.writeHead(204).end();
    }
    return callback(req, res);
  } catch (err) {
    console.error(err);
    if (!res.headersSent) res.writeHead(500);
    res.end(String(err));
  }
});

console.log(`listening ${port}`);
