import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Adds "close every descriptor from 3 up" to a child's spawn actions (glibc's
/// posix_spawn_file_actions_addclosefrom_np, 2.34+, looked up at run time because Swift's Glibc
/// module does not declare it): no descriptor of this process leaks into a database tool, and a
/// process holding many descriptors cannot push the child past its open-file limit.
public func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) {
    typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return }
    _ = unsafeBitCast(symbol, to: AddCloseFrom.self)(&actions, 3)
}
