// What Immich's mobile app (3.x) does against a server, driven with Immich's own SDK
// (@immich/sdk 3.2.2) against a Tessera node: the first contact, login, users/me and
// preferences, the sync stream (its request types, in its order) and acks, a Live Photo
// uploaded the way the app does it (video first, hidden, then the photo naming it), a normal
// photo, a second stream with exactly the new assets, deletes, albums and partners, and the
// stream's error cases. The sequence and the Immich files it comes from are in ARCHITECTURE.md.
// Prints "MOBILE OK <summary>" or throws.
// Env: TESSERA_URL, SDK_PATH, ADMIN_EMAIL, ADMIN_PASSWORD, STILL, VIDEO, PHOTO, PHOTO2.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

const sdk = await import(process.env.SDK_PATH);
const base = process.env.TESSERA_URL + '/api';
const as = (headers) => { sdk.defaults.baseUrl = base; sdk.defaults.headers = { ...headers }; };
const must = (cond, what) => { if (!cond) throw new Error('FAILED: ' + what); };
const status = async (p) => { try { await p; return 200; } catch (e) { return e.status ?? String(e); } };
const sha1 = (path) => createHash('sha1').update(readFileSync(path)).digest('base64');

// The app's request types, in the app's order (mobile/lib/infrastructure/repositories/
// sync_api.repository.dart, server ≥ 3.0.0).
const TYPES = ['AuthUsersV1', 'UsersV1', 'AssetsV2', 'AssetExifsV1', 'AssetEditsV1',
  'AssetMetadataV1', 'PartnersV1', 'PartnerAssetsV2', 'PartnerAssetExifsV1', 'AlbumsV2',
  'AlbumUsersV1', 'AlbumAssetsV2', 'AlbumAssetExifsV1', 'AlbumToAssetsV1', 'MemoriesV1',
  'MemoryToAssetsV1', 'StacksV1', 'PartnerStacksV1', 'UserMetadataV1', 'PeopleV1',
  'AssetFacesV2', 'AssetOcrV1'];

// 1. First contact, before login (mobile/lib/widgets/forms/login/login_form.dart).
as({});
must((await sdk.pingServer()).res === 'pong', 'ping');
const version = await sdk.getServerVersion();
must(version.major >= 3, 'a 3.x version (the app asks for V1 types below 3.0.0)');
const features = await sdk.getServerFeatures();
must(features.passwordLogin === true, 'password login');
const config = await sdk.getServerConfig();
must(config.isInitialized === true && Number.isInteger(config.trashDays), 'server config: ' + JSON.stringify(config));

// 2. Login with a password, as the app does; then the session's token.
const login = await sdk.login({ loginCredentialDto: {
  email: process.env.ADMIN_EMAIL, password: process.env.ADMIN_PASSWORD } });
const auth = { Authorization: 'Bearer ' + login.accessToken };
as(auth);
const me = await sdk.getMyUser();
for (const k of ['id', 'email', 'name', 'oauthId', 'profileChangedAt', 'avatarColor',
  'quotaSizeInBytes', 'quotaUsageInBytes', 'storageLabel', 'deletedAt', 'license',
  'shouldChangePassword', 'isAdmin', 'createdAt', 'updatedAt', 'status']) {
  must(k in me, 'users/me has ' + k);
}
const prefs = await sdk.getMyPreferences();
must(typeof prefs.memories === 'object', 'preferences');
must((await sdk.validateAccessToken()).authStatus === true, 'validateToken');

// The sync stream: JSON lines {type, data, ack}. The SDK's getSyncStream does not parse
// JSON lines, so the app's own way: POST and split lines.
const stream = async (body, headers = auth) => {
  const res = await fetch(base + '/sync/stream', {
    method: 'POST',
    headers: { ...headers, 'Content-Type': 'application/json', Accept: 'application/jsonlines+json' },
    body: JSON.stringify(body),
  });
  if (res.status !== 200) return { status: res.status, lines: [], error: await res.text() };
  must(res.headers.get('content-type').startsWith('application/jsonlines+json'), 'content type');
  const text = await res.text();
  return { status: 200, lines: text.split('\n').filter((l) => l).map((l) => JSON.parse(l)) };
};
// The app acks the last line of each run of one type.
const ackAll = async (lines) => {
  const last = new Map();
  for (const l of lines) last.set(l.type, l.ack);
  await sdk.sendSyncAck({ syncAckSetDto: { acks: [...last.values()] } });
};
const ofType = (lines, t) => lines.filter((l) => l.type === t);
const waitProcessed = async (ids) => {
  for (let i = 0; i < 240; i++) {
    const infos = await Promise.all(ids.map((id) => sdk.getAssetInfo({ id })));
    if (infos.every((a) => a.tessera.status !== 'pending')) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error('FAILED: assets still processing after 60 s');
};

// 3. First sync: the admin's user, the household's users, the admin's one photo.
const first = await stream({ types: TYPES });
must(first.status === 200, 'first stream: ' + first.status + ' ' + first.error);
const f = first.lines;
must(f.at(-1).type === 'SyncCompleteV1', 'ends with SyncCompleteV1');
must(ofType(f, 'AuthUserV1').length === 1 && ofType(f, 'AuthUserV1')[0].data.id === me.id, 'AuthUserV1');
must(ofType(f, 'UserV1').length === 1, 'the one user: ' + ofType(f, 'UserV1').length);
const initial = ofType(f, 'AssetV2');
must(initial.length === 1, 'the one photo: ' + initial.length);
must(initial[0].data.checksum === sha1(process.env.PHOTO2), 'checksum = base64 SHA-1 of the file');
must(initial[0].data.ownerId === me.id, 'ownerId');
// Immich's order: users before assets before their EXIF.
const idx = (t) => f.findIndex((l) => l.type === t);
must(idx('UserV1') < idx('AssetV2') && idx('AssetV2') < idx('AssetExifV1'), 'order: ' + f.map((l) => l.type).join(','));
await ackAll(f);
const acks = await sdk.getSyncAck();
must(acks.some((a) => a.type === 'AssetV2'), 'acks stored: ' + JSON.stringify(acks));

// Nothing changed: only SyncCompleteV1.
const quiet = await stream({ types: TYPES });
must(quiet.lines.length === 1 && quiet.lines[0].type === 'SyncCompleteV1',
  'a quiet stream: ' + quiet.lines.map((l) => l.type).join(','));
await ackAll(quiet.lines);

// 4. Backup the way the app does: the Live Photo's video first (hidden), then its photo naming
// the video, then a normal photo. Names that do not pair by themselves.
const up = (path, name, extra = {}) => sdk.uploadAsset({ assetMediaCreateDto: {
  assetData: new Blob([readFileSync(path)]), filename: name,
  fileCreatedAt: '2024-06-01T10:00:00.000Z', fileModifiedAt: '2024-06-01T10:00:00.000Z',
  isFavorite: false, ...extra } });
const video = await up(process.env.VIDEO, 'live_part.mov', { visibility: 'hidden', duration: 2000 });
must(video.status === 'created', 'video: ' + JSON.stringify(video));
const still = await up(process.env.STILL, 'IMG_7001.HEIC', { livePhotoVideoId: video.id });
const photo = await up(process.env.PHOTO, 'garden.jpg');
must(still.status === 'created' && photo.status === 'created', 'uploads');
await waitProcessed([video.id, still.id, photo.id]);
const second = await stream({ types: TYPES });
const s = second.lines;
const assets = ofType(s, 'AssetV2').map((l) => l.data);
must(assets.length === 3 && [video.id, still.id, photo.id].every((id) => assets.some((a) => a.id === id)),
  'exactly the three new assets: ' + JSON.stringify(assets.map((a) => a.id)));
const v = assets.find((a) => a.id === video.id);
const st = assets.find((a) => a.id === still.id);
must(v.visibility === 'hidden' && v.type === 'VIDEO', 'the Live Photo video is hidden: ' + JSON.stringify(v));
must(st.livePhotoVideoId === video.id && st.visibility === 'timeline', 'the photo names its video: ' + JSON.stringify(st));
must(assets.every((a) => a.checksum && a.localDateTime && a.fileCreatedAt), 'dates and checksums');
must(ofType(s, 'AssetExifV1').length === 3, 'their EXIF');
must(ofType(s, 'AuthUserV1').length === 1 && ofType(s, 'AuthUserV1')[0].data.quotaUsageInBytes > 0, 'usage moved');
if (process.env.DUMP) console.log(s.map((l) => JSON.stringify(l)).join('\n'));
await ackAll(s);
const info = await sdk.getAssetInfo({ id: still.id });
must(info.livePhotoVideoId === video.id, 'asset info: the pair');

// 5. Trash one (AssetV2 with deletedAt), delete one for good (AssetDeleteV1).
await sdk.deleteAssets({ assetBulkDeleteDto: { ids: [photo.id], force: false } });
await sdk.deleteAssets({ assetBulkDeleteDto: { ids: [initial[0].data.id], force: true } });
// An album with the photo and a member.
const kid = await sdk.createUserAdmin({ userAdminCreateDto: {
  email: 'kid2@example.com', password: 'password1', name: 'Kid Two', shouldChangePassword: false } });
const album = await sdk.createAlbum({ createAlbumDto: {
  albumName: 'Live', assetIds: [still.id], albumUsers: [{ userId: kid.id, role: 'viewer' }] } });
const third = await stream({ types: TYPES });
const t = third.lines;
const trashed = ofType(t, 'AssetV2').find((l) => l.data.id === photo.id);
must(trashed && trashed.data.deletedAt, 'trashed: AssetV2 with deletedAt');
must(ofType(t, 'AssetDeleteV1').some((l) => l.data.assetId === initial[0].data.id), 'AssetDeleteV1');
must(ofType(t, 'UserV1').some((l) => l.data.id === kid.id), 'the new user');
const al = ofType(t, 'AlbumV2');
must(al.length === 1 && al[0].data.id === album.id && al[0].data.thumbnailAssetId === still.id, 'AlbumV2: ' + JSON.stringify(al));
must(ofType(t, 'AlbumUserV1').some((l) => l.data.userId === kid.id && l.data.role === 'viewer'), 'AlbumUserV1');
must(ofType(t, 'AlbumToAssetV1').some((l) => l.data.albumId === album.id && l.data.assetId === still.id), 'AlbumToAssetV1');
const order = t.map((l) => l.type);
must(order.indexOf('UserV1') < order.indexOf('AlbumV2') && order.indexOf('AlbumV2') < order.indexOf('AlbumToAssetV1'), 'order: ' + order.join(','));
await ackAll(t);

// 6. The member's own stream: the album, and its photo as an album asset (not theirs).
as({});
const kidLogin = await sdk.login({ loginCredentialDto: { email: 'kid2@example.com', password: 'password1' } });
const kidAuth = { Authorization: 'Bearer ' + kidLogin.accessToken };
as(kidAuth);
const k = (await stream({ types: TYPES }, kidAuth)).lines;
const albumAssets = ofType(k, 'AlbumAssetCreateV2');
must(albumAssets.length === 1 && albumAssets[0].data.id === still.id && albumAssets[0].data.ownerId === me.id,
  'the album photo reaches the member: ' + k.map((l) => l.type).join(','));
must(ofType(k, 'AssetV2').length === 0, 'nothing of their own');
must(k.findIndex((l) => l.type === 'AlbumAssetCreateV2') < k.findIndex((l) => l.type === 'AlbumV2'), 'assets before the album (its cover)');
await ackAll(k);
// Partner sharing: the admin shares everything with the member. The album photo moves from
// the album assets to the partner assets without being deleted on the device.
as(auth);
await sdk.createPartner({ partnerCreateDto: { sharedWithId: kid.id } });
const p = (await stream({ types: TYPES }, kidAuth)).lines;
must(ofType(p, 'PartnerV1').some((l) => l.data.sharedById === me.id && l.data.sharedWithId === kid.id), 'PartnerV1');
const partnerAssets = ofType(p, 'PartnerAssetV2').map((l) => l.data.id).sort();
must(JSON.stringify(partnerAssets) === JSON.stringify([video.id, still.id].sort()),
  'partner assets (nothing trashed): ' + p.map((l) => l.type).join(','));
must(ofType(p, 'AssetDeleteV1').length === 0 && ofType(p, 'PartnerAssetDeleteV1').length === 0, 'no deletes');
must(p.findIndex((l) => l.type === 'PartnerV1') < p.findIndex((l) => l.type === 'PartnerAssetV2'), 'partner before its assets');
as(kidAuth);
await ackAll(p);

// 7. Errors: API keys cannot sync, unknown types and malformed acks are refused.
as(auth);
const key = await sdk.createApiKey({ apiKeyCreateDto: { name: 'script', permissions: ['all'] } });
must((await stream({ types: TYPES }, { 'x-api-key': key.secret })).status === 403, 'API keys cannot sync');
must((await stream({ types: ['NoSuchTypeV9'] })).status === 400, 'unknown request type');
must(await status(sdk.sendSyncAck({ syncAckSetDto: { acks: ['garbage'] } })) === 400, 'malformed ack');

// 8. Forget one type's acks: its entities come again; reset: everything again.
await sdk.deleteSyncAck({ syncAckDeleteDto: { types: ['AssetV2'] } });
const again = await stream({ types: TYPES });
must(ofType(again.lines, 'AssetV2').length === 3, 'AssetV2 resent after deleting its acks: ' + ofType(again.lines, 'AssetV2').length);
const reset = await stream({ types: TYPES, reset: true });
must(ofType(reset.lines, 'UserV1').length === 2 && ofType(reset.lines, 'AssetV2').length === 3, 'reset: all again');
must(ofType(reset.lines, 'SyncResetV1').length === 0, 'reset:true starts over without SyncResetV1');

console.log(`MOBILE OK streams: first ${f.length} lines, after backup ${s.length}, after deletes/albums ${t.length}, member ${k.length}, partner ${p.length}`);
