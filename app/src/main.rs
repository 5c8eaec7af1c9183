fn main() {
    tessera_app::start();
}
