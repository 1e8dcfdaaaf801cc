// HS256 JWT verification for the "NGINX full" peer of benches/compare.sh:
// what a user would write to build this gateway out of NGINX and njs
// (Debian's libnginx-mod-http-js). `js_set $jwt_sub jwt.verify` yields the
// token's `sub` ("-" when it has none) or "" when the token is missing,
// malformed, not HS256, badly signed or expired.
const crypto = require('crypto');

function claims(token, secret) {
    const parts = token.split('.');
    if (parts.length !== 3) return null;
    const header = JSON.parse(Buffer.from(parts[0], 'base64url').toString());
    if (header.alg !== 'HS256') return null;
    const signature = crypto.createHmac('sha256', secret)
        .update(parts[0] + '.' + parts[1]).digest('base64url');
    if (signature !== parts[2]) return null;
    const body = JSON.parse(Buffer.from(parts[1], 'base64url').toString());
    if (typeof body.exp !== 'number' || body.exp <= Date.now() / 1000) return null;
    return body;
}

function verify(r) {
    const bearer = /^Bearer +(.+)$/i.exec(r.headersIn.Authorization || '');
    if (!bearer) return '';
    try {
        const body = claims(bearer[1], r.variables.jwt_secret);
        return body ? String(body.sub || '-') : '';
    } catch (e) {
        return '';
    }
}

export default { verify };
