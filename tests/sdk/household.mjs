// Immich's own TypeScript SDK (@immich/sdk 3.2.2) against a Tessera node: users, an upload the
// way the SDK sends it (a Blob named "blob" plus the real name in `filename`), a shared album
// with an editor, comments, partner sharing and public links. Prints "SDK OK <summary>" or
// throws. Env: TESSERA_URL, TESSERA_API_KEY (an admin's), SDK_PATH, PHOTO_A, PHOTO_B.
import { readFileSync } from 'node:fs';

const sdk = await import(process.env.SDK_PATH);
const base = process.env.TESSERA_URL + '/api';
// (a copy: the SDK's init() writes into the current headers object)
const as = (headers) => { sdk.defaults.baseUrl = base; sdk.defaults.headers = { ...headers }; };
const admin = { 'x-api-key': process.env.TESSERA_API_KEY };
const must = (cond, what) => { if (!cond) throw new Error('FAILED: ' + what); };
const status = async (p) => { try { await p; return 200; } catch (e) { return e.status ?? String(e); } };
const upload = (path, name, device) => sdk.uploadAsset({
  assetMediaCreateDto: {
    assetData: new Blob([readFileSync(path)]),
    deviceAssetId: name, deviceId: device,
    fileCreatedAt: '2024-06-01T10:00:00.000Z', fileModifiedAt: '2024-06-01T10:00:00.000Z',
    filename: name,
  },
});

as(admin);
const me = await sdk.getMyUser();
// What Immich's mobile app reads first: all must answer in Immich's shapes.
const version = await sdk.getServerVersion();
must(version.major === 3, 'an Immich 3.x API version: ' + JSON.stringify(version));
const features = await sdk.getServerFeatures();
must(features.trash === true && features.passwordLogin === true, 'features');
const storage = await sdk.getStorage();
must(storage.diskSizeRaw > 0 && storage.diskAvailableRaw > 0 && typeof storage.diskUse === 'string', 'storage: ' + JSON.stringify(storage));
const about = await sdk.getAboutInfo();
must(about.version.startsWith('v3.'), 'about');
const prefs = await sdk.getMyPreferences();
for (const k of ['albums', 'cast', 'download', 'emailNotifications', 'folders', 'memories', 'people', 'purchase', 'ratings', 'recentlyAdded', 'sharedLinks', 'tags']) {
  must(typeof prefs[k] === 'object', 'preferences.' + k);
}
must((await sdk.validateAccessToken()).authStatus === true, 'validateToken');
const a = await upload(process.env.PHOTO_A, 'beach.jpg', 'sdk-test');
must(a.status === 'created', 'admin upload: ' + JSON.stringify(a));
const info = await sdk.getAssetInfo({ id: a.id });
must(info.originalFileName === 'beach.jpg', 'the real name, not "blob": ' + info.originalFileName);

const kid = await sdk.createUserAdmin({ userAdminCreateDto: {
  email: 'kid@example.com', password: 'password1', name: 'Kid', shouldChangePassword: false } });
const album = await sdk.createAlbum({ createAlbumDto: {
  albumName: 'SDK trip', assetIds: [a.id], albumUsers: [{ userId: kid.id, role: 'editor' }] } });
must(album.shared && album.assetCount === 1, 'album: ' + JSON.stringify(album));

as({});
const login = await sdk.login({ loginCredentialDto: { email: 'kid@example.com', password: 'password1' } });
const kidAuth = { Authorization: 'Bearer ' + login.accessToken };
as(kidAuth);
const b = await upload(process.env.PHOTO_B, 'crab.jpg', 'sdk-kid');
must(b.status === 'created', 'member upload');
const added = await sdk.addAssetsToAlbum({ id: album.id, bulkIdsDto: { ids: [b.id] } });
must(added[0].success, 'editor adds their photo: ' + JSON.stringify(added));
await sdk.createActivity({ activityCreateDto: { albumId: album.id, type: 'comment', comment: 'Found a crab' } });
await sdk.createActivity({ activityCreateDto: { albumId: album.id, type: 'like' } });
must(await status(sdk.getAssetInfo({ id: a.id })) === 200, 'a member sees the album photo');

as(admin);
const acts = await sdk.getActivities({ albumId: album.id });
must(acts.length === 2 && acts.some((x) => x.comment === 'Found a crab'), 'activities: ' + JSON.stringify(acts));
const full = await sdk.getAlbumInfo({ id: album.id });
must(full.assetCount === 2, 'album has both photos');

// Partner sharing: the admin shares their library; the kid shows it in their timeline.
await sdk.createPartner({ partnerCreateDto: { sharedWithId: kid.id } });
as(kidAuth);
const partners = await sdk.getPartners({ direction: 'shared-with' });
must(partners.length === 1 && partners[0].id === me.id, 'partners: ' + JSON.stringify(partners));
const up = await sdk.updatePartner({ id: me.id, partnerUpdateDto: { inTimeline: true } });
must(up.inTimeline === true, 'inTimeline');

// Public links: open, then with a password, then revoked.
as(admin);
const open = await sdk.createSharedLink({ sharedLinkCreateDto: { type: 'ALBUM', albumId: album.id, allowDownload: false } });
const locked = await sdk.createSharedLink({ sharedLinkCreateDto: { type: 'INDIVIDUAL', assetIds: [a.id], password: 'sesame' } });
as({});
const mine = await sdk.getMySharedLink({ key: open.key });
must(mine.album?.id === album.id && mine.assets.length === 2, 'link: ' + JSON.stringify(mine).slice(0, 300));
const viaKey = await sdk.getAlbumInfo({ id: album.id, key: open.key });
must(viaKey.assetCount === 2, 'album through the key');
const thumb = await sdk.viewAsset({ id: b.id, key: open.key, size: 'thumbnail' }).catch((e) => e);
must(!(thumb instanceof Error) || thumb.status === 404, 'thumbnail through the key (or not made yet)');
must(await status(sdk.getMySharedLink({ key: locked.key })) === 401, 'a password is required');
const token = await sdk.sharedLinkLogin({ key: locked.key, sharedLinkLoginDto: { password: 'sesame' } });
must(typeof token.token === 'string' && token.token.length > 0, 'login gives a token');
must(await status(sdk.sharedLinkLogin({ key: locked.key, sharedLinkLoginDto: { password: 'nope' } })) === 401, 'wrong password');
as(admin);
await sdk.removeSharedLink({ id: open.id });
as({});
must(await status(sdk.getMySharedLink({ key: open.key })) === 404, 'revoked link is gone');
must(await status(sdk.getAlbumInfo({ id: album.id, key: open.key })) === 404, 'revoked link opens nothing');
as(admin);
const links = await sdk.getAllSharedLinks({});
must(links.length === 1, 'one link left');
console.log('SDK OK ' + JSON.stringify({ album: album.id, assets: full.assetCount, activities: acts.length, partners: partners.length, links: links.length }));
