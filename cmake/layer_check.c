/* The program behind each layer_check_<lib> target (CMakeLists.txt): it is
 * linked with one library whole and only the libraries that library may use,
 * so any call across the layering leaves an undefined symbol and fails the
 * build. It is never run. */
int main(void) { return 0; }
