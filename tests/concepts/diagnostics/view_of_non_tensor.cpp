// Must NOT compile; the test checks that the error explains how to make a type viewable.
#include "dms/concepts/tensor_view.hpp"
struct opaque { int x; };
int main() {
  opaque o{1};
  auto v = dms::view_of(o);
  return static_cast<int>(v.rank);
}
